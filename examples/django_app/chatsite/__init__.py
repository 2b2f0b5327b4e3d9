"""An example Django chat service whose calls are attributed, metered and budgeted per identity."""
