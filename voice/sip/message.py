"""SIP messages (RFC 3261 section 7, 20, 25): parsing, building and the header values we read.

Headers keep their order and repetitions; compact forms (`v:`, `f:`, `i:` …) are expanded on
parse so the rest of the stack asks for one canonical name only. List-valued headers (Via,
Route, Record-Route, Contact) folded into one line with commas are split into one entry each,
respecting quotes and angle brackets, so `message.get_all("Via")` is always one hop per item.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
# Names whose canonical spelling is not plain Title-Case-Per-Dash.
_SPECIAL_NAMES = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}
# Headers whose comma-separated values are separate entries (RFC 3261 section 7.3.1).
_LIST_HEADERS = frozenset({"Via", "Route", "Record-Route", "Contact"})

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 branch prefix: the branch alone identifies the transaction

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    603: "Decline",
}


class SipParseError(ValueError):
    """The datagram is not a SIP message we can make sense of."""


def canonical_name(name: str) -> str:
    name = name.strip()
    lowered = name.lower()
    if len(lowered) == 1 and lowered in COMPACT_FORMS:
        return COMPACT_FORMS[lowered]
    if lowered in _SPECIAL_NAMES:
        return _SPECIAL_NAMES[lowered]
    return "-".join(part[:1].upper() + part[1:] for part in lowered.split("-"))


def split_list(value: str, separator: str = ",") -> list[str]:
    """Split on `separator` outside quoted strings and <...> URIs."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = 0
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            angle += 1
        elif not quoted and char == ">":
            angle = max(angle - 1, 0)
        elif char == separator and not quoted and angle == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    tail = "".join(current).strip()
    if tail or items:
        items.append(tail)
    return [item for item in items if item]


def parse_params(text: str) -> dict[str, str | None]:
    """`;a=1;lr;b="x"` -> {"a": "1", "lr": None, "b": "x"}; names are case-insensitive."""
    params: dict[str, str | None] = {}
    for part in split_list(text, ";"):
        name, has_value, value = part.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[name.strip().lower()] = value if has_value else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(
        f";{name}" if value is None else f";{name}={value}" for name, value in params.items()
    )


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


@dataclass
class SipUri:
    """sip:user@host:port;params (RFC 3261 section 19.1); also carries tel: numbers."""

    scheme: str = "sip"
    user: str = ""
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""  # `?...` part, kept verbatim

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon:
            raise SipParseError(f"not a URI: {text!r}")
        scheme = scheme.lower()
        rest, _, headers = rest.partition("?")
        if scheme == "tel":
            number, _, params = rest.partition(";")
            return cls(scheme, number, "", None, parse_params(params), headers)
        if scheme not in ("sip", "sips"):
            raise SipParseError(f"unsupported URI scheme: {scheme}")
        userinfo, at, hostpart = rest.rpartition("@")
        if not at:
            hostpart = rest
        hostport, _, params = hostpart.partition(";")
        user = userinfo.partition(":")[0]  # a password in a URI is deprecated; ignore it
        host, port = _split_hostport(hostport)
        return cls(scheme, user, host, port, parse_params(params), headers)

    def __str__(self) -> str:
        if self.scheme == "tel":
            text = f"tel:{self.user}{format_params(self.params)}"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            userinfo = f"{self.user}@" if self.user else ""
            port = f":{self.port}" if self.port else ""
            text = f"{self.scheme}:{userinfo}{host}{port}{format_params(self.params)}"
        return f"{text}?{self.headers}" if self.headers else text


def _split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    try:
        port = int(port_text) if port_text else None
    except ValueError as error:
        raise SipParseError(f"bad port in {text!r}") from error
    return host.lower(), port


@dataclass
class Address:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Refer-To, PAI."""

    uri: SipUri
    display: str = ""
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Address:
        text = text.strip()
        if "<" in text:
            display, _, rest = text.partition("<")
            uri_text, closed, params = rest.partition(">")
            if not closed:
                raise SipParseError(f"unclosed <> in {text!r}")
            display = display.strip()
            if len(display) >= 2 and display[0] == display[-1] == '"':
                display = display[1:-1]
        else:
            # addr-spec: parameters after the URI belong to the header (RFC 3261 section 20)
            uri_text, _, params = text.partition(";")
            params = ";" + params if params else ""
            display = ""
        return cls(SipUri.parse(uri_text), display, parse_params(params))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


@dataclass
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @classmethod
    def parse(cls, text: str) -> Via:
        match = re.match(r"\s*SIP\s*/\s*2\.0\s*/\s*(\w+)\s+([^;]+)(.*)$", text, re.IGNORECASE)
        if not match:
            raise SipParseError(f"bad Via: {text!r}")
        host, port = _split_hostport(match.group(2))
        return cls(match.group(1).upper(), host, port, parse_params(match.group(3)))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


class SipMessage:
    """Headers in order (canonical names) and a body; Content-Length is set on encode."""

    def __init__(self, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self.headers: list[tuple[str, str]] = []
        for name, value in headers or []:
            self.add(name, value)
        self.body = body

    # --- headers -------------------------------------------------------------------------

    def get(self, name: str) -> str | None:
        name = canonical_name(name)
        return next((value for key, value in self.headers if key == name), None)

    def get_all(self, name: str) -> list[str]:
        name = canonical_name(name)
        return [value for key, value in self.headers if key == name]

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        name = canonical_name(name)
        values = split_list(value) if name in _LIST_HEADERS and value.strip() != "*" else [value]
        entries = [(name, item.strip()) for item in values]
        if first:
            self.headers[0:0] = entries
        else:
            self.headers.extend(entries)

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence, keeping the position of the first one."""
        name = canonical_name(name)
        index = next((i for i, (key, _) in enumerate(self.headers) if key == name), None)
        self.remove(name)
        if index is None:
            self.headers.append((name, value))
        else:
            self.headers.insert(index, (name, value))

    def remove(self, name: str) -> None:
        name = canonical_name(name)
        self.headers = [(key, value) for key, value in self.headers if key != name]

    # --- typed views ---------------------------------------------------------------------

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        value = self.get("CSeq") or ""
        number, _, method = value.strip().partition(" ")
        try:
            return int(number), method.strip().upper()
        except ValueError as error:
            raise SipParseError(f"bad CSeq: {value!r}") from error

    @property
    def from_(self) -> Address:
        return Address.parse(self._required("From"))

    @property
    def to(self) -> Address:
        return Address.parse(self._required("To"))

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(value) for value in self.get_all("Via")]

    @property
    def contact(self) -> Address | None:
        value = self.get("Contact")
        return Address.parse(value) if value and value.strip() != "*" else None

    @property
    def content_type(self) -> str:
        return (self.get("Content-Type") or "").partition(";")[0].strip().lower()

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header")
        return value

    # --- wire format ---------------------------------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        self.set("Content-Length", str(len(self.body)))
        lines = [self.start_line(), *(f"{name}: {value}" for name, value in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def __bytes__(self) -> bytes:
        return self.encode()


class SipRequest(SipMessage):
    def __init__(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method.upper()
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} cseq={self.get('CSeq')!r}>"


class SipResponse(SipMessage):
    def __init__(
        self,
        status: int,
        reason: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason or REASONS.get(status, "Unknown")

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} cseq={self.get('CSeq')!r}>"


def make_response(
    request: SipRequest, status: int, reason: str = "", *, to_tag: str | None = None
) -> SipResponse:
    """A response that mirrors the request's Via, From, To, Call-ID and CSeq (section 8.2.6)."""
    response = SipResponse(status, reason)
    for value in request.get_all("Via"):
        response.add("Via", value)
    response.add("From", request.get("From") or "")
    to = request.get("To") or ""
    if to_tag and status != 100 and Address.parse(to).tag is None:
        to = f"{to};tag={to_tag}"
    response.add("To", to)
    response.add("Call-ID", request.call_id)
    response.add("CSeq", request.get("CSeq") or "")
    return response


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """One UDP datagram -> message; the body is cut to Content-Length (if absent: the rest)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SipParseError("headers are not UTF-8") from error
    lines = text.replace("\r\n", "\n").lstrip("\n").split("\n")
    if not lines or not lines[0].strip():
        raise SipParseError("empty message")
    start = lines[0].strip()
    message: SipRequest | SipResponse
    if start.startswith("SIP/2.0 "):
        _, status, reason = [*start.split(" ", 2), ""][:3]
        if not status.isdigit() or len(status) != 3:
            raise SipParseError(f"bad status line: {start!r}")
        message = SipResponse(int(status), reason.strip())
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2].upper() != "SIP/2.0" or not parts[0].isalpha():
            raise SipParseError(f"bad request line: {start!r}")
        message = SipRequest(parts[0], parts[1])
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()  # RFC 3261 section 7.3.1 line folding
        elif line.strip():
            unfolded.append(line)
    for line in unfolded:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipParseError(f"bad header line: {line!r}")
        message.add(name, value.strip())
    length = message.get("Content-Length")
    if length is not None:
        try:
            size = int(length)
        except ValueError as error:
            raise SipParseError(f"bad Content-Length: {length!r}") from error
        if size > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[:size]
    message.body = body
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if message.get(name) is None:
            raise SipParseError(f"missing {name} header")
    message.cseq  # noqa: B018  (validates the CSeq number)
    return message


def mask_number(number: str) -> str:
    """Caller numbers in logs: 13800138000 -> 138****8000 (PIPL; the same shape as workorders)."""
    digits = re.sub(r"\D", "", number)
    if not digits:
        return "***" if number else ""
    if len(digits) > 11 and digits.startswith("86"):
        digits = digits[2:]
    if len(digits) <= 4:
        return "*" * len(digits)
    if len(digits) == 11:
        return f"{digits[:3]}****{digits[-4:]}"
    return "*" * (len(digits) - 4) + digits[-4:]


def mask_digits(text: str) -> str:
    """Mask every run of 7+ digits (phone numbers inside log text, URIs, error messages)."""
    return re.sub(r"\+?\d{7,}", lambda match: mask_number(match.group()), text)
