"""Stand-ins for the two SMS vendors, on real loopback ports: Alibaba Cloud's Dysms
``SendSms`` and Tencent Cloud's SMS ``SendSms``.

Each checks a request the way the vendor's gateway does, from the request as received, with
the secret it knows — written here from the vendors' documents, independently of
``wxpush.sms.signing`` — and refuses in the vendor's own shape:

- Aliyun (V3, ACS3-HMAC-SHA256): ``IncompleteSignature`` (no or malformed Authorization, a
  signed-header list that leaves out ``host``, ``content-type`` or an ``x-acs-*`` header),
  ``InvalidAccessKeyId.NotFound``, ``InvalidTimeStamp.Expired`` (``x-acs-date`` more than
  15 minutes off), ``SignatureNonceUsed``, ``SignatureDoesNotMatch`` (also when the body is not
  the one whose hash was signed) — HTTP 4xx with ``{"RequestId","HostId","Code","Message",
  "Recommend"}``; then the business checks (``isv.*`` codes, HTTP 200), and ``{"Code":"OK"}``.
- Tencent (TC3-HMAC-SHA256, service ``sms``): ``AuthFailure.InvalidAuthorization``,
  ``AuthFailure.SecretIdNotFound``, ``AuthFailure.SignatureExpire`` (``X-TC-Timestamp`` more
  than 5 minutes off), ``AuthFailure.SignatureFailure``; ``InvalidAction``, ``NoSuchVersion``;
  the business checks; all HTTP 200 with ``{"Response": {"Error": …}}`` or a
  ``SendStatusSet``.

Observe ``delivered`` (each accepted message: the number as the vendor got it, the code, the
sign and template) and ``refusals`` (each code answered that was not a success). Script the
next verified request with :meth:`FakeVendor.then` (``"hang"``, ``"garble"``, a vendor code
to answer with, or an HTTP status and raw body); ``tamper`` changes the body on the way in,
as a meddling proxy would, before the checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.server import serve

Refusal = tuple[int, str, str]  # HTTP status, vendor code, message


@dataclass(frozen=True)
class Answer:
    """A scripted verdict for a request that passed the checks: the vendor's code and message,
    the HTTP status (Aliyun's gateway errors come with a 4xx), and for Tencent whether it is
    the call's ``Error`` (``whole``) or the number's status. ``{code}`` in the message is
    replaced by the code in the request (a vendor quoting a parameter back)."""

    code: str
    message: str = ""
    status: int = 200
    whole: bool = False


@dataclass
class Delivered:
    phone: str  # as the vendor received it
    code: str
    sign_name: str
    template: str


@dataclass
class FakeVendor:
    key_id: str
    secret: str
    sign_name: str
    template: str
    url: str = ""
    tamper: bool = False
    delivered: list[Delivered] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    codes_seen: list[str] = field(default_factory=list)  # in every body received, sent or not
    nonces: set[str] = field(default_factory=set)
    script: deque[Any] = field(default_factory=deque)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def then(self, *behaviours: Any) -> None:
        """What the next requests get: ``"hang"``, ``"garble"``, an :class:`Answer`, or
        ``(status, raw body)``."""
        self.script.extend(behaviours)

    def last_code(self, phone: str) -> str:
        """The code last delivered to ``phone`` (E.164 or as the vendor got it)."""
        wanted = {phone, phone.removeprefix("+"), phone.removeprefix("+86")}
        with self.lock:
            return [d.code for d in self.delivered if d.phone in wanted][-1]

    def reset(self) -> None:
        with self.lock:
            self.delivered.clear()
            self.refusals.clear()
            self.codes_seen.clear()
            self.script.clear()
        self.tamper = False
        self.released = threading.Event()  # a request still hung from before keeps the old one

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if self.tamper:  # a proxy that "fixes" the number on the way
            body = body.replace(b"13800138000", b"13900139000")
        with self.lock:
            self.codes_seen.extend(self.codes_in(body))
        behaviour = self.script.popleft() if self.script else None
        if isinstance(behaviour, Answer) and self.codes_seen:
            message = behaviour.message.replace("{code}", self.codes_seen[-1])
            behaviour = dataclasses.replace(behaviour, message=message)
        if behaviour == "hang":
            released = self.released
            while not released.is_set():
                await asyncio.sleep(0.02)
            return Response(status_code=504)
        if behaviour == "garble":
            return Response(b"\xff\xfe<html>upstream \x00 error", media_type="text/html")
        if isinstance(behaviour, tuple) and isinstance(behaviour[0], int):
            return Response(behaviour[1], status_code=behaviour[0], media_type="text/html")
        return self.answer(request, body, behaviour)

    def answer(self, request: Request, body: bytes, behaviour: Any) -> Response:
        raise NotImplementedError

    def codes_in(self, body: bytes) -> list[str]:
        raise NotImplementedError

    def refused(self, code: str) -> None:
        with self.lock:
            self.refusals.append(code)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rfc3986(text: str) -> str:
    return quote(text, safe="-_.~")


def _canonical(request: Request, names: list[str], body: bytes, *, lower: bool) -> str:
    """The canonical request as a vendor rebuilds it from what it received."""
    query = sorted((_rfc3986(k), _rfc3986(v)) for k, v in request.query_params.multi_items())
    headers = ""
    for name in names:
        value = request.headers.get(name, "").strip()
        headers += f"{name}:{value.lower() if lower else value}\n"
    return "\n".join([
        request.method, quote(request.url.path, safe="/-_.~"),
        "&".join(f"{k}={v}" for k, v in query), headers, ";".join(names), _sha256(body),
    ])  # fmt: skip


# -- Alibaba Cloud ------------------------------------------------------------------------------

_ACS3 = re.compile(
    r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([a-z0-9;-]+),Signature=([0-9a-f]{64})"
)
_ACS_MUST = ("x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce",
             "x-acs-content-sha256")  # fmt: skip


@dataclass
class FakeAliyun(FakeVendor):
    def answer(self, request: Request, body: bytes, behaviour: Any) -> Response:
        refusal = self.check_signature(request, body)
        if refusal is None:
            params = {**dict(request.query_params), **dict(parse_qsl(body.decode()))}
            refusal = self.check_message(params)
        if refusal is None and isinstance(behaviour, Answer):
            refusal = (behaviour.status, behaviour.code, behaviour.message)
        if refusal is not None:
            self.refused(refusal[1])
            return self.error(*refusal)
        with self.lock:
            self.delivered.append(Delivered(params["PhoneNumbers"],
                json.loads(params["TemplateParam"])["code"], params["SignName"],
                params["TemplateCode"]))  # fmt: skip
        return JSONResponse({"Message": "OK", "RequestId": str(uuid.uuid4()).upper(),
                             "Code": "OK", "BizId": "900619746936498440^0"})  # fmt: skip

    def codes_in(self, body: bytes) -> list[str]:
        try:
            return [json.loads(dict(parse_qsl(body.decode()))["TemplateParam"])["code"]]
        except (ValueError, KeyError, TypeError):
            return []

    def check_signature(self, request: Request, body: bytes) -> Refusal | None:
        found = _ACS3.fullmatch(request.headers.get("authorization", ""))
        if found is None or any(name not in request.headers for name in _ACS_MUST):
            return (
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        key_id, signed, signature = found.groups()
        names = signed.split(";")
        covered = {"host", "content-type"} | {n for n in request.headers if n.startswith("x-acs-")}
        if names != sorted(names) or not covered <= set(names):
            return (
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        if key_id != self.key_id:
            return 404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
        if request.headers["x-acs-action"] != "SendSms":
            return (
                404,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            )
        if request.headers["x-acs-version"] != "2017-05-25":
            return 400, "InvalidVersion", "Specified parameter Version is not valid."
        try:
            sent = datetime.strptime(request.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return (
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        if abs(sent.replace(tzinfo=UTC).timestamp() - time.time()) > 15 * 60:
            return 400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
        to_sign = "ACS3-HMAC-SHA256\n" + _sha256(
            _canonical(request, names, body, lower=False).encode()
        )
        expected = hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        body_ok = request.headers["x-acs-content-sha256"] == _sha256(body)
        if not (body_ok and hmac.compare_digest(expected, signature)):
            return (
                400,
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation.",
            )
        with self.lock:
            if request.headers["x-acs-signature-nonce"] in self.nonces:
                return 400, "SignatureNonceUsed", "Specified signature nonce was used already."
            self.nonces.add(request.headers["x-acs-signature-nonce"])
        return None

    def check_message(self, params: dict[str, str]) -> Refusal | None:
        if not re.fullmatch(r"(\+|00)?(86)?1\d{10}|[1-9]\d{7,14}", params.get("PhoneNumbers", "")):
            return 200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"
        if params.get("SignName") != self.sign_name:
            return 200, "isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名"
        if params.get("TemplateCode") != self.template:
            return 200, "isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板"
        try:
            variables = json.loads(params.get("TemplateParam", ""))
        except ValueError:
            return 200, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值"
        if not isinstance(variables, dict) or not isinstance(variables.get("code"), str):
            return 200, "isv.TEMPLATE_MISSING_PARAMETERS", "模版缺少变量"
        return None

    def error(self, status: int, code: str, message: str) -> Response:
        answer = {"RequestId": str(uuid.uuid4()).upper(), "Code": code, "Message": message}
        if status != 200:
            answer |= {"HostId": "dysmsapi.aliyuncs.com",
                       "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}"}  # fmt: skip
        return JSONResponse(answer, status_code=status)


# -- Tencent Cloud ------------------------------------------------------------------------------

_TC3 = re.compile(
    r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/([a-z]+)/tc3_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)
_BAD_SIGNATURE = (
    "The provided credentials could not be validated. Please check your signature is correct."
)


@dataclass
class FakeTencent(FakeVendor):
    sdk_app_id: str = "1400006666"

    def answer(self, request: Request, body: bytes, behaviour: Any) -> Response:
        refusal = self.check_signature(request, body)
        try:
            params = json.loads(body)
        except ValueError:
            refusal = refusal or (200, "InvalidParameter", "The request body is not JSON.")
        if refusal is None:
            refusal = self.check_message(params)
        if refusal is None and isinstance(behaviour, Answer) and behaviour.whole:
            refusal = (behaviour.status, behaviour.code, behaviour.message)
        if refusal is not None:
            self.refused(refusal[1])
            return self.respond({"Error": {"Code": refusal[1], "Message": refusal[2]}})
        phone, code = params["PhoneNumberSet"][0], params["TemplateParamSet"][0]
        verdict = ("Ok", "send success")
        if not re.fullmatch(r"\+[1-9]\d{6,14}", phone):
            verdict = ("InvalidParameterValue.IncorrectPhoneNumber", "invalid phone number")
        elif isinstance(behaviour, Answer):
            verdict = (behaviour.code, behaviour.message)
        if verdict[0] == "Ok":
            with self.lock:
                self.delivered.append(Delivered(phone, code, params["SignName"],
                                                params["TemplateId"]))  # fmt: skip
        else:
            self.refused(verdict[0])
        status = {"SerialNo": "5000:1045710669157053657849499619", "PhoneNumber": phone,
                  "Fee": 1, "SessionContext": "", "Code": verdict[0], "Message": verdict[1],
                  "IsoCode": "CN"}  # fmt: skip
        return self.respond({"SendStatusSet": [status]})

    def codes_in(self, body: bytes) -> list[str]:
        try:
            return [str(code) for code in json.loads(body)["TemplateParamSet"]]
        except (ValueError, KeyError, TypeError):
            return []

    def check_signature(self, request: Request, body: bytes) -> Refusal | None:
        found = _TC3.fullmatch(request.headers.get("authorization", ""))
        if found is None:
            return (
                200,
                "AuthFailure.InvalidAuthorization",
                "Authorization is not in the TC3 format.",
            )
        secret_id, date, service, signed, signature = found.groups()
        names = signed.split(";")
        if names != sorted(names) or not {"content-type", "host"} <= set(names):
            return 200, "AuthFailure.InvalidAuthorization", "content-type and host must be signed."
        if secret_id != self.key_id:
            return 200, "AuthFailure.SecretIdNotFound", "The SecretId is not found."
        stamp = request.headers.get("x-tc-timestamp", "")
        if not stamp.isdigit() or abs(int(stamp) - time.time()) > 300:
            return 200, "AuthFailure.SignatureExpire", "Signature expired."
        day = datetime.fromtimestamp(int(stamp), UTC).strftime("%Y-%m-%d")
        scope = f"{date}/{service}/tc3_request"
        canonical = _canonical(request, names, body, lower=True)
        to_sign = f"TC3-HMAC-SHA256\n{stamp}\n{scope}\n{_sha256(canonical.encode())}"
        key = ("TC3" + self.secret).encode()
        for part in (date, service, "tc3_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if (date, service) != (day, "sms") or not hmac.compare_digest(expected, signature):
            return 200, "AuthFailure.SignatureFailure", _BAD_SIGNATURE
        if request.headers.get("x-tc-action") != "SendSms":
            return 200, "InvalidAction", "The action does not exist."
        if request.headers.get("x-tc-version") != "2021-01-11":
            return 200, "NoSuchVersion", "The API version does not exist."
        if not request.headers.get("x-tc-region"):
            return 200, "MissingParameter", "The Region parameter is missing."
        return None

    def check_message(self, params: Any) -> Refusal | None:
        if not isinstance(params, dict) or not isinstance(params.get("PhoneNumberSet"), list):
            return 200, "MissingParameter", "PhoneNumberSet is missing."
        if params.get("SmsSdkAppId") != self.sdk_app_id:
            return 200, "InvalidParameterValue.SdkAppIdNotExist", "SdkAppId does not exist."
        if params.get("SignName") != self.sign_name:
            return 200, "FailedOperation.SignatureIncorrectOrUnapproved", "签名未审批或格式错误"
        if params.get("TemplateId") != self.template:
            return 200, "FailedOperation.TemplateIncorrectOrUnapproved", "模板未审批或内容不匹配"
        template_params = params.get("TemplateParamSet")
        if not (isinstance(template_params, list) and len(template_params) == 1
                and isinstance(template_params[0], str)):  # fmt: skip
            return 200, "FailedOperation.TemplateParamSetNotMatchApprovedTemplate", "参数不匹配"
        if len(params["PhoneNumberSet"]) != 1:
            return 200, "LimitExceeded.PhoneNumberCountLimit", "one number in these tests"
        return None

    def respond(self, response: dict[str, Any]) -> Response:
        return JSONResponse({"Response": {**response, "RequestId": str(uuid.uuid4())}})


@contextmanager
def running(fake: FakeVendor) -> Iterator[FakeVendor]:
    """Serve ``fake`` on a free loopback port (``fake.url``) until the block ends."""
    app = Starlette(routes=[Route("/", fake.endpoint, methods=["POST"])])
    with serve(app) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.released.set()  # a hung request ends, so the server can stop


def aliyun() -> FakeAliyun:
    return FakeAliyun("LTAI5tTestKeyId0000000000", "TestAccessKeySecret0000000000aa",
                      "阿里云短信测试", "SMS_154950909")  # fmt: skip


def tencent() -> FakeTencent:
    return FakeTencent("AKIDTestSecretId00000000000000000000", "TestSecretKey0000000000000000aa",
                       "腾讯云", "1110")  # fmt: skip
