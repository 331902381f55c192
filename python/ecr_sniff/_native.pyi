"""Type stubs for the native module ``ecr_sniff._native`` (built from crates/ecr-py)."""

import os
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, Optional, TypedDict, Union

__version__: str

BytesLike = Union[bytes, bytearray, memoryview]
"""Binary input; ``bytes`` is read in place, the others are copied once."""
Text = Union[str, bytes, bytearray, memoryview]
"""Text input (Base64, JSON bodies); ``str`` is read as UTF-8."""
StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Content = Union[dict[str, Any], str]
"""A request's content: a dict (numbers signed as ``json.dumps`` writes them), or
JSON text holding an object (number tokens kept exactly, e.g. ``10.10``)."""

Record = dict[str, Any]
"""One analyzer record: ``json.loads`` of one line of ``ecr-sniff analyze --format jsonl``.
``record["kind"]`` is ``"message"``, ``"transaction"``, ``"finding"`` or ``"summary"``
(the last record); see README "JSON records" for the fields."""

# --- exceptions -----------------------------------------------------------

class EcrError(Exception):
    """Base class of every error raised by ecr_sniff."""

class PosKeyError(EcrError):
    """A POS-KEY that cannot be used; names the key by its position, never its text."""

class DecryptError(EcrError):
    """Not Base64 of whole AES blocks, or no key reading decrypts it."""

class FrameBuildError(EcrError):
    """Frame data that does not fit the 16-bit length fields."""

class EnvelopeError(EcrError):
    """A body that is not an ECR request or response, or cannot be decrypted."""

class ContentError(EcrError):
    """Content that cannot be signed (non-str keys, NaN, unsupported types, bad JSON)."""

class CaptureError(EcrError):
    """A capture file that cannot be opened or read. ``str(e)`` is ``"<path>: <reason>"``."""

    path: str
    reason: str

# --- frames ---------------------------------------------------------------

class Frame:
    """A valid ``0x2f6e`` frame and where it was seen (timestamps in ns)."""

    @property
    def version(self) -> int: ...
    @property
    def type(self) -> int:
        """0x10 request, 0x20 ack, 0x30..0x35 error."""
    @property
    def ref(self) -> int: ...
    @property
    def total_len(self) -> int:
        """This frame's size in bytes (11 + data carried)."""
    @property
    def data_len(self) -> int:
        """The whole message's data length (larger than ``len(data)`` for a fragment)."""
    @property
    def data(self) -> bytes: ...
    @property
    def raw(self) -> bytes:
        """The whole frame, markers included."""
    @property
    def offset(self) -> int:
        """Stream offset of the first byte."""
    @property
    def first_ts(self) -> int: ...
    @property
    def last_ts(self) -> int: ...
    @property
    def type_name(self) -> Literal["request", "ack", "error", "unknown"]: ...
    @property
    def description(self) -> str:
        """E.g. ``"error 0x33 (decryption error)"``."""
    @property
    def is_fragment(self) -> bool: ...
    @property
    def is_oversize(self) -> bool:
        """More than the 1024 data bytes per frame the spec recommends."""
    def __bytes__(self) -> bytes: ...
    def __len__(self) -> int: ...

class Rejected:
    """A frame-shaped unit with a bad version, unknown type or inconsistent lengths."""

    @property
    def version(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def ref(self) -> int: ...
    @property
    def total_len(self) -> int: ...
    @property
    def data_len(self) -> int: ...
    @property
    def error(self) -> str: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def offset(self) -> int: ...
    @property
    def first_ts(self) -> int: ...
    @property
    def last_ts(self) -> int: ...
    def __bytes__(self) -> bytes: ...

class Skipped:
    """A run of bytes that belong to no frame."""

    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def first_ts(self) -> int: ...
    @property
    def last_ts(self) -> int: ...
    @property
    def cause(self) -> Literal["not-a-frame", "invalid", "truncated"]: ...
    @property
    def detail(self) -> Optional[str]:
        """For ``"invalid"``: what was wrong with the frame start."""
    @property
    def ref(self) -> Optional[int]: ...
    def __len__(self) -> int: ...

Event = Union[Frame, Rejected, Skipped]

class DecoderStats(TypedDict):
    bytes: int
    frames: int
    rejected: int
    skipped_bytes: int

class Decoder:
    """Streaming frame decoder for one direction of a link; every byte fed ends up in
    exactly one Frame, Rejected or Skipped."""

    def __init__(self) -> None: ...
    def feed(self, data: BytesLike, ts: int = 0) -> list[Event]:
        """Feeds a chunk seen at ``ts`` (ns since the epoch, e.g. ``time.time_ns()``);
        returns the frames and events it completes."""
    def gap(self, missing: int) -> list[Event]:
        """``missing`` bytes were lost: a frame in progress is reported truncated."""
    def flush(self) -> list[Event]:
        """Reports a pending skipped run now."""
    def finish(self) -> list[Event]:
        """Ends the stream."""
    @property
    def offset(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def stats(self) -> DecoderStats: ...

def decode_frames(data: BytesLike) -> list[Frame]:
    """Every complete valid frame in ``data`` (garbage, rejected and truncated frames
    are left out; use :class:`Decoder` to see them)."""

def build_frames(data: BytesLike, ref: int, type: int = 0x10, max_fragment: int = 1024) -> bytes:
    """The frames of one message: one frame, or fragments of at most ``max_fragment``
    data bytes, each carrying the whole message's data length (D1)."""

# --- crypto, digest, envelopes --------------------------------------------

def decrypt(text: Text, key: str) -> bytes:
    """Decrypts Base64 AES-CBC text (IV ``qfpay202306_hjsh``); a 32-hex-digit key is
    tried as text (AES-256) and as 16 bytes (D3)."""

def encrypt(plain: Text, key: str) -> str:
    """Encrypts with the key text's bytes (as Odoo does); returns Base64."""

def format_content(content: Content) -> str:
    """``{amt=10.1,channel='wx',func_type=1001}``: keys sorted, strings in single quotes."""

def digest(content: Content, key: str) -> str:
    """Lowercase hex ``md5(format_content(content) + key)``."""

class Verdict:
    """What :func:`verify` found in a message body."""

    @property
    def kind(self) -> Literal["request", "response"]: ...
    @property
    def dialect(self) -> str:
        """Requests: ``plain``, ``content-encrypted``, ``envelope-encrypted``;
        responses: ``plain``, ``encrypted``, ``data-encrypted``."""
    @property
    def body_form(self) -> Literal["json", "lenient", "base64", "quoted-base64", "quoted-json"]: ...
    @property
    def digest(self) -> Optional[Literal["ok", "mismatch", "absent", "unverified"]]:
        """None for responses."""
    @property
    def digest_value(self) -> Optional[str]: ...
    @property
    def expected_digest(self) -> Optional[str]: ...
    @property
    def mistake(self) -> Optional[str]:
        """The signing bug behind a mismatch, e.g. ``"double-quotes"``, ``"unsorted-keys"``,
        ``"key-not-appended"``, ``"amount-two-decimals"``."""
    @property
    def mistake_detail(self) -> Optional[str]: ...
    @property
    def key_index(self) -> Optional[int]:
        """0-based index of the key that decrypted (or signed) the message."""
    @property
    def key_interpretation(self) -> Optional[Literal["text-128", "text-192", "text-256", "hex-128"]]: ...
    @property
    def content(self) -> Optional[dict[str, Any]]: ...
    @property
    def content_json(self) -> Optional[str]: ...
    @property
    def format_content(self) -> Optional[str]: ...
    @property
    def response(self) -> Optional[dict[str, Any]]:
        """Response fields with ``data`` parsed a second time (D5)."""
    @property
    def respcd(self) -> Optional[str]: ...
    @property
    def plaintext(self) -> Optional[str]: ...
    @property
    def ok(self) -> bool:
        """A request whose digest checks out."""

def verify(body: Text, key: Union[str, Sequence[str], None] = None) -> Verdict:
    """Parses, decrypts and checks one message body (HTTP body, TCP message or serial
    data segment). Raises :class:`EnvelopeError` if it is not an ECR message."""

# --- captures -------------------------------------------------------------

class Records(Iterator[Record]):
    """The records of one analysis, produced on a worker thread without the GIL."""

    def __iter__(self) -> "Records": ...
    def __next__(self) -> Record: ...
    def close(self) -> None:
        """Stops the analysis; iteration ends."""
    def __enter__(self) -> "Records": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    @property
    def files(self) -> list[str]: ...

def analyze(
    path: Union[StrPath, Sequence[StrPath]],
    keys: Union[str, Sequence[str], None] = None,
    *,
    key_file: Optional[StrPath] = None,
    http_ports: Optional[Sequence[int]] = None,
    tcp_ports: Optional[Sequence[int]] = None,
    probe: bool = False,
    tls_keylog: Union[StrPath, Sequence[StrPath], None] = None,
) -> Records:
    """Analyses pcap/pcapng(.gz) files (several are one capture, in order).

    ``keys``: POS-KEYs, each ``"KEY"`` or ``"ADDRESS=KEY"`` (bound to one terminal).
    ``tls_keylog``: TLS key logs (SSLKEYLOGFILE format) to decrypt HTTPS; records
    of decrypted connections have transport ``"https"``.
    Raises :class:`CaptureError` (naming the file and the reason) before returning
    if a file cannot be opened; damaged records inside a file are findings."""
