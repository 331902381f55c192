"""decrypt, encrypt, format_content, digest and verify, against the vectors of
docs/protocol.md#vectors and crates/ecr-proto/tests/data/vectors.json."""

from __future__ import annotations

import json
from typing import Any

import pytest

import ecr_sniff

DEFAULT_KEY = "f46b1f08bec1f39104792cc79ec9aacd"
AES128_KEY = "my_qfpay_pos_key"

# docs/protocol.md, "Test vectors".
DECISION_DIGESTS = [
    ({"func_type": 4001, "orderId": "12345678"}, DEFAULT_KEY, "99ce8bf9c7304ac964522d10f51660b4"),
    ({"func_type": 5001}, DEFAULT_KEY, "77760cafee81dc33c720c90b75787b5f"),
]
DECISION_CIPHERTEXTS = [
    (
        DEFAULT_KEY,
        "{content:{func_type=4001,orderId='12345678'}, digest:'99CE8BF9C7304AC964522D10F51660B4'}",
        "XczeNuwMCct+IaXZ00lv7Pern+ttWiSyG+Y62QH+wXr471L2opZR5JPeQPXADN/Xc1s+VL82RqBp0KFPo5Mm6KUFau0S1WRPC2YN4s6WpiFjwrbGPq3JPZ2OYXTGZHAb",
    ),
    (
        AES128_KEY,
        "{content:{func_type=5001}, digest:'5511FE1F062D5DE5AADF6D076F34B8D2'}",
        "lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=",
    ),
]
MISTAKE_NAMES = {
    "double quotes instead of single": "double-quotes",
    "keys not sorted": "unsorted-keys",
    "amount reformatted (10.10 for 10.1)": "amount-two-decimals",
    "key not appended": "key-not-appended",
}


@pytest.mark.parametrize(("content", "key", "expected"), DECISION_DIGESTS)
def test_decision_digests(content: dict[str, Any], key: str, expected: str) -> None:
    assert ecr_sniff.digest(content, key) == expected


def test_format_content_rules() -> None:
    assert ecr_sniff.format_content({"func_type": 4001, "orderId": "12345678"}) == "{func_type=4001,orderId='12345678'}"
    # Keys sorted, null and "" as '', booleans bare.
    assert ecr_sniff.format_content({"b": None, "a": "", "c": True}) == "{a='',b='',c=true}"
    # JSON text keeps number tokens exactly; a dict gives json.dumps' form.
    assert ecr_sniff.format_content('{"amt":10.10,"func_type":1001}') == "{amt=10.10,func_type=1001}"
    assert ecr_sniff.format_content({"amt": 10.10, "func_type": 1001}) == "{amt=10.1,func_type=1001}"
    assert ecr_sniff.format_content({"amt": 100.0}) == "{amt=100.0}"


def test_content_that_cannot_be_signed() -> None:
    with pytest.raises(ecr_sniff.ContentError, match="content.amt"):
        ecr_sniff.format_content({"amt": float("nan")})
    with pytest.raises(ecr_sniff.ContentError, match="keys must be str"):
        ecr_sniff.format_content({1: 2})
    with pytest.raises(ecr_sniff.ContentError, match="type set"):
        ecr_sniff.format_content({"x": {1, 2}})
    with pytest.raises(ecr_sniff.ContentError, match="not JSON"):
        ecr_sniff.format_content("{amt=")
    with pytest.raises(ecr_sniff.ContentError, match="JSON array"):
        ecr_sniff.format_content("[1]")
    with pytest.raises(TypeError):
        ecr_sniff.format_content(42)  # type: ignore[arg-type]
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(200):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(ecr_sniff.ContentError, match="nested deeper"):
        ecr_sniff.format_content(deep)


@pytest.mark.parametrize(("key", "plaintext", "ciphertext"), DECISION_CIPHERTEXTS)
def test_decision_ciphertexts(key: str, plaintext: str, ciphertext: str) -> None:
    assert ecr_sniff.encrypt(plaintext, key) == ciphertext
    assert ecr_sniff.encrypt(plaintext.encode(), key) == ciphertext
    assert ecr_sniff.decrypt(ciphertext, key) == plaintext.encode()
    assert ecr_sniff.decrypt(ciphertext.encode(), key) == plaintext.encode()


def test_decrypt_errors_and_key_errors_never_show_the_key() -> None:
    ct = DECISION_CIPHERTEXTS[0][2]
    with pytest.raises(ecr_sniff.DecryptError, match="no key decrypts"):
        ecr_sniff.decrypt(ct, "0123456789abcdef")
    with pytest.raises(ecr_sniff.DecryptError, match="Base64"):
        ecr_sniff.decrypt("not base64!!", DEFAULT_KEY)
    with pytest.raises(ecr_sniff.DecryptError, match="multiple of 16"):
        ecr_sniff.decrypt("AAAA", DEFAULT_KEY)
    secret = "short-secret-key"[:10]
    with pytest.raises(ecr_sniff.PosKeyError) as e:
        ecr_sniff.encrypt("x", secret)
    assert secret not in str(e.value) and "16, 24 or 32" in str(e.value)
    with pytest.raises(ecr_sniff.PosKeyError) as e:
        ecr_sniff.verify(b"{}", [DEFAULT_KEY, secret])
    assert "key number 2" in str(e.value) and secret not in str(e.value)
    assert issubclass(ecr_sniff.PosKeyError, ecr_sniff.EcrError)


def test_hex_key_is_also_tried_as_16_bytes() -> None:
    # D3: a 32-hex-digit key is also read as the 16 bytes it encodes. The hex of
    # "my_qfpay_pos_key" decodes to that text, so a message encrypted with the text
    # key (AES-128) must decrypt with the hex key through its hex-128 reading.
    hex_key = AES128_KEY.encode().hex()
    assert len(hex_key) == 32
    plaintext, ciphertext = DECISION_CIPHERTEXTS[1][1], DECISION_CIPHERTEXTS[1][2]
    assert ecr_sniff.decrypt(ciphertext, hex_key) == plaintext.encode()
    verdict = ecr_sniff.verify(ciphertext, hex_key)
    assert verdict.dialect == "envelope-encrypted" and verdict.body_form == "base64"
    assert verdict.key_interpretation == "hex-128"
    assert verdict.content == {"func_type": 5001}


def test_envelope_vectors_verify(vectors: dict[str, Any]) -> None:
    for v in vectors["envelopes"]:
        verdict = ecr_sniff.verify(v["body"].encode(), v["key"])
        label = f'{v["dialect"]} {v["key"]}'
        assert verdict.kind == "request", label
        assert verdict.dialect == v["dialect"], label
        assert verdict.digest == "ok" and verdict.ok, label
        assert verdict.digest_value == v["digest"], label
        assert verdict.content == v["content"], label
        assert verdict.key_index == 0, label
        assert verdict.format_content == ecr_sniff.format_content(v["content"]), label
        if "plaintext" in v:
            assert verdict.plaintext == v["plaintext"], label
            assert verdict.key_interpretation in ("text-128", "text-256"), label
        else:
            assert verdict.plaintext is None and verdict.key_interpretation is None, label
        if "format_content" in v:
            assert verdict.format_content == v["format_content"]
            assert ecr_sniff.digest(v["content"], v["key"]) == v["digest"]


def test_envelope_without_key(vectors: dict[str, Any]) -> None:
    plain = next(v for v in vectors["envelopes"] if v["dialect"] == "plain")
    assert ecr_sniff.verify(plain["body"]).digest == "unverified"
    encrypted = next(v for v in vectors["envelopes"] if v["dialect"] == "envelope-encrypted")
    with pytest.raises(ecr_sniff.EnvelopeError, match="no POS-KEY was given"):
        ecr_sniff.verify(encrypted["body"])
    with pytest.raises(ecr_sniff.EnvelopeError, match="no POS-KEY decrypts"):
        ecr_sniff.verify(encrypted["body"], AES128_KEY)


def test_signing_mistake_vectors(vectors: dict[str, Any]) -> None:
    content = vectors["envelopes"][0]["content"]
    for v in vectors["signing_mistakes"]:
        body = json.dumps({"content": content, "digest": v["digest"]})
        verdict = ecr_sniff.verify(body, v["key"])
        assert verdict.digest == "mismatch", v["mistake"]
        assert verdict.mistake == MISTAKE_NAMES[v["mistake"]], v["mistake"]
        assert verdict.mistake_detail, v["mistake"]
        assert verdict.expected_digest == ecr_sniff.digest(content, v["key"])
        assert not verdict.ok


def test_verify_response_parses_data_twice() -> None:
    body = json.dumps(
        {
            "respcd": "6000",
            "respmsg": "AUTHORISED",
            "resperr": "trade success",
            "data": json.dumps({"syssn": "20250703155400020061880690", "txamt": "100", "txcurrcd": "344"}),
        }
    )
    verdict = ecr_sniff.verify(body, DEFAULT_KEY)
    assert (verdict.kind, verdict.dialect, verdict.respcd) == ("response", "plain", "6000")
    assert verdict.digest is None and verdict.content is None
    assert verdict.response is not None
    assert verdict.response["data"] == {"syssn": "20250703155400020061880690", "txamt": "100", "txcurrcd": "344"}


def test_verify_refuses_what_is_not_a_message() -> None:
    for body in [b"", b"[1,2]", b"\x00\x01binary", b'{"hello": 1}', b"{not json"]:
        with pytest.raises(ecr_sniff.EnvelopeError):
            ecr_sniff.verify(body, DEFAULT_KEY)


def test_verify_roundtrip_of_an_envelope_built_here() -> None:
    content = {"func_type": 1001, "amt": 10.1, "channel": "wx", "out_trade_no": "X1"}
    d = ecr_sniff.digest(content, AES128_KEY).upper()
    plaintext = "{content:" + ecr_sniff.format_content(content) + ", digest:'" + d + "'}"
    body = json.dumps(ecr_sniff.encrypt(plaintext, AES128_KEY))
    verdict = ecr_sniff.verify(body, ["0" * 16, AES128_KEY])
    assert verdict.dialect == "envelope-encrypted" and verdict.ok
    assert verdict.key_index == 1 and verdict.body_form == "quoted-base64"
    assert verdict.content == content
