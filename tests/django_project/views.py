"""Views of the test site: who is calling, usage recording, errors, streaming and ``@budgeted``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View

from identity_middleware import current_identity, record_usage
from identity_middleware.django import budgeted


def _who(request: HttpRequest) -> dict[str, object]:
    cost = request.GET.get("cost")
    if cost:
        record_usage(cost, input_tokens=2, output_tokens=3, model="stand-in")
    context = current_identity()
    attached = getattr(request, "identity", None)
    return {"identity": context.external_id if context else None,
            "request_identity": attached.external_id if attached else None,
            "body": request.body.decode() if request.method == "POST" else None}


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request), status=int(request.GET.get("status", 200)))


async def awhoami(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0)
    return JsonResponse(_who(request), status=int(request.GET.get("status", 200)))


def boom(request: HttpRequest) -> HttpResponse:
    record_usage("0.02")
    raise RuntimeError("the model is down")


def _chunks() -> Iterator[bytes]:
    for index in range(4):
        who = current_identity()
        record_usage("0.001", output_tokens=1)
        yield f"{index}:{who.external_id if who else '-'}\n".encode()


async def _achunks() -> AsyncIterator[bytes]:
    for chunk in _chunks():
        await asyncio.sleep(0)
        yield chunk


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_chunks(), content_type="text/plain")


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_achunks(), content_type="text/plain")


@budgeted(estimate="0.50")
def chat(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@budgeted(estimate="0.50")
async def achat(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@budgeted()
def needs_identity(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@method_decorator(budgeted(estimate="0.50"), name="post")
class ChatView(View):
    def post(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(_who(request))


def indirect_chat(request: HttpRequest) -> JsonResponse:
    """An undecorated view handing over to a decorated one: the middleware cannot see the mark."""
    return chat(request)


def echo(request: HttpRequest) -> HttpResponse:
    """The body exactly as the view read it, and who the middleware said is calling."""
    identity = current_identity()
    response = HttpResponse(request.body, content_type="application/octet-stream")
    response["X-Seen-Identity"] = identity.external_id.encode().hex() if identity else "-"
    return response


# -- views that leave an instrumented LLM stream after one item (PROVIDER_URL set by the test) -----------
PROVIDER_URL = ""
abandoned: list[object] = []  # kept alive past the request, as a reference cycle would keep them
clients: list[object] = []  # closed by the test, on the event loop that served the request


def abandon(request: HttpRequest) -> JsonResponse:
    import openai

    from identity_middleware import instrument

    client = instrument(openai.OpenAI(api_key="sk-test", base_url=f"{PROVIDER_URL}/v1", max_retries=0),
                        prices={"slow-gpt-4o-mini": ("0.15", "0.60", "0.075")})
    items = iter(client.chat.completions.create(model="slow-gpt-4o-mini", stream=True,
                                                messages=[{"role": "user", "content": "Hi"}]))
    next(items)
    abandoned.append(items)
    return JsonResponse({})


async def aabandon(request: HttpRequest) -> JsonResponse:
    import anthropic

    from identity_middleware import instrument

    client = instrument(anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=PROVIDER_URL, max_retries=0),
                        prices={"slow-claude-sonnet-4-6": ("3", "15", "0.30", "3.75")})
    clients.append(client)
    stream = await client.messages.create(model="slow-claude-sonnet-4-6", max_tokens=10, stream=True,
                                          messages=[{"role": "user", "content": "Hi"}])
    async for _event in stream:
        break  # no close()
    return JsonResponse({})
