import hashlib
import json
import os

from django.http import (FileResponse, HttpResponse, JsonResponse,
                         StreamingHttpResponse)
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def index(request):
    return HttpResponse("hello from django\n", content_type="text/plain")


def json_get(request):
    return JsonResponse({"ok": True, "args": dict(request.GET.lists()),
                         "scheme": request.scheme, "path": request.path,
                         "host": request.get_host()})


@csrf_exempt
def echo_json(request):
    return JsonResponse({"method": request.method, "got": json.loads(request.body)})


@csrf_exempt
def form(request):
    return JsonResponse({"form": dict(request.POST.lists())})


@csrf_exempt
def upload(request):
    files = {}
    for name, f in request.FILES.items():
        h = hashlib.sha256()
        size = 0
        for chunk in f.chunks():
            h.update(chunk)
            size += len(chunk)
        files[name] = {"filename": f.name, "size": size, "sha256": h.hexdigest()}
    return JsonResponse({"files": files, "fields": request.POST.dict()})


def stream(request):
    n = int(request.GET.get("n", "5"))
    return StreamingHttpResponse(("line %d\n" % i for i in range(n)),
                                 content_type="text/plain")


def cookie_set(request):
    resp = JsonResponse({"set": True})
    resp.set_cookie("flavour", "oatmeal", httponly=True)
    resp.set_cookie("other", "xy", path="/cookie")
    return resp


def cookie_get(request):
    return JsonResponse({"cookies": dict(request.COOKIES)})


def redirect_view(request):
    return redirect(reverse("json") + "?via=redirect")


def error(request):
    raise ValueError("django view failed on purpose")


def file_view(request):
    return FileResponse(open(os.path.join(STATIC, "hello.txt"), "rb"),
                        content_type="text/plain")
