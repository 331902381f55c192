"""Make the QFPay ECR protocol visible from Python.

The protocol core and the capture analyzer of ecr-sniff (a Rust library), offered
to scripts, notebooks and test suites:

- Serial frames (``0x2f6e``): :func:`decode_frames`, the streaming :class:`Decoder`
  and :func:`build_frames`.
- Crypto and signatures: :func:`decrypt`, :func:`encrypt`, :func:`format_content`,
  :func:`digest` and :func:`verify`, which names the dialect, the digest status and
  the signing mistake behind a bad digest.
- Captures: :func:`analyze` yields one dict per record, exactly the objects of
  ``ecr-sniff analyze --format jsonl``, so ``pandas.DataFrame(analyze(...))`` works.

Every error is an :class:`EcrError`; POS-KEYs never appear in messages.
"""

from ._native import (
    CaptureError,
    ContentError,
    DecryptError,
    Decoder,
    EcrError,
    EnvelopeError,
    Frame,
    FrameBuildError,
    PosKeyError,
    Records,
    Rejected,
    Skipped,
    Verdict,
    __version__,
    analyze,
    build_frames,
    decode_frames,
    decrypt,
    digest,
    encrypt,
    format_content,
    verify,
)

# Frame types of spec section 10.3/10.4, for build_frames(type=...).
REQUEST = 0x10
ACK = 0x20

__all__ = [
    "ACK",
    "REQUEST",
    "CaptureError",
    "ContentError",
    "DecryptError",
    "Decoder",
    "EcrError",
    "EnvelopeError",
    "Frame",
    "FrameBuildError",
    "PosKeyError",
    "Records",
    "Rejected",
    "Skipped",
    "Verdict",
    "__version__",
    "analyze",
    "build_frames",
    "decode_frames",
    "decrypt",
    "digest",
    "encrypt",
    "format_content",
    "verify",
]
