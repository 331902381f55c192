"""analyze(): every sample capture of captures/manifest.json, record by record
against the command line's jsonl output (the golden files that `cargo test`
keeps equal to the binary, and the binary itself when ECR_SNIFF_BIN names it)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import ecr_sniff
from conftest import manifest_entries

ENTRIES = manifest_entries()
IDS = [e["file"] for e in ENTRIES]


def run_analyze(entry: dict[str, Any], with_keys: bool = True) -> list[dict[str, Any]]:
    ports = {"tcp_ports": [entry["port"]]} if "port" in entry else {}
    keys = entry["keys"] if with_keys else None
    return list(ecr_sniff.analyze(f"captures/{entry['file']}", keys, **ports))


def golden(root: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    with open(root / "captures/expected" / f"{entry['file']}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_records_equal_the_golden_jsonl(in_root: Path, entry: dict[str, Any]) -> None:
    records = run_analyze(entry)
    expected = golden(in_root, entry)
    assert len(records) == len(expected)
    for i, (got, want) in enumerate(zip(records, expected)):
        assert got == want, f"record {i + 1}"
    assert records[-1]["kind"] == "summary"
    assert all(r["kind"] != "summary" for r in records[:-1])


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_summary_matches_the_manifest(in_root: Path, entry: dict[str, Any]) -> None:
    summary = run_analyze(entry)[-1]
    for field in ("findings", "func_types", "transactions"):
        if field in entry["expect"]:
            assert summary[field] == entry["expect"][field], field
    if "no-key" in entry.get("expect_without_key", {}):
        without = run_analyze(entry, with_keys=False)[-1]
        assert without["findings"].get("no-key", 0) == entry["expect_without_key"]["no-key"]


@pytest.mark.skipif(not os.environ.get("ECR_SNIFF_BIN"), reason="ECR_SNIFF_BIN (the ecr-sniff binary) not set")
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_records_equal_the_binary_output(in_root: Path, entry: dict[str, Any]) -> None:
    args = [os.environ["ECR_SNIFF_BIN"], "analyze", f"captures/{entry['file']}", "--format", "jsonl"]
    for k in entry["keys"]:
        args += ["--key", k]
    if "port" in entry:
        args += ["--tcp-port", str(entry["port"])]
    env = {k: v for k, v in os.environ.items() if k != "ECR_POS_KEY"}
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=in_root, env=env).stdout
    assert run_analyze(entry) == [json.loads(line) for line in out.splitlines()]


def test_documented_record_shapes(in_root: Path) -> None:
    records = list(ecr_sniff.analyze("captures/http-digest-mismatch-double-quotes.pcap", ["a1b2c3d4e5f6a7b8"]))
    kinds = [r["kind"] for r in records]
    assert kinds.count("summary") == 1 and kinds[-1] == "summary"
    request = next(r for r in records if r["kind"] == "message" and r["role"] == "request")
    assert request["digest"] == "mismatch" and request["func_type"] == 1001
    assert request["content"]["channel"] == "card_payment"
    finding = next(r for r in records if r["kind"] == "finding" and r["code"] == "digest-mismatch")
    assert "double quotes" in finding["detail"] and finding["severity"] == "error"
    tx = next(r for r in records if r["kind"] == "transaction")
    assert tx["respcd"] == "4003" and tx["latency_ms"] > 0


def test_paths_keys_and_several_files(in_root: Path) -> None:
    a, b = "captures/http-slow-terminal.pcap", "captures/http-plain-all-functypes.pcap"
    key = "f46b1f08bec1f39104792cc79ec9aacd"
    as_path = list(ecr_sniff.analyze(Path(a), key))
    assert as_path == list(ecr_sniff.analyze(a, [key]))
    both = list(ecr_sniff.analyze([a, b], [key]))
    summary = both[-1]
    assert summary["files"] == [a, b]
    single = [list(ecr_sniff.analyze(p, [key]))[-1] for p in (a, b)]
    assert summary["transactions"] == sum(s["transactions"] for s in single)
    # A key bound to a terminal address that is not in the capture does not apply.
    bound = list(ecr_sniff.analyze(a, [f"10.9.9.9={key}"]))[-1]
    assert bound["findings"].get("no-key", 0) > 0
    # Key files, as on the command line.
    kf = in_root / "target" / "py-test-keys.txt"
    kf.parent.mkdir(exist_ok=True)
    kf.write_text(f"# shop keys\n127.0.0.1={key}\n")
    assert list(ecr_sniff.analyze(a, key_file=kf)) == as_path


def test_errors_name_the_file_and_the_reason(in_root: Path) -> None:
    with pytest.raises(ecr_sniff.CaptureError) as e:
        ecr_sniff.analyze("Cargo.toml")
    assert str(e.value).startswith("Cargo.toml: not a pcap or pcapng file")
    assert e.value.path == "Cargo.toml" and e.value.reason.startswith("not a pcap")
    with pytest.raises(ecr_sniff.CaptureError, match=r"^captures/none\.pcap: cannot open: "):
        ecr_sniff.analyze(["captures/http-slow-terminal.pcap", "captures/none.pcap"])
    secret = "tooshort"
    with pytest.raises(ecr_sniff.PosKeyError) as k:
        ecr_sniff.analyze("captures/http-slow-terminal.pcap", ["a1b2c3d4e5f6a7b8", secret])
    assert "key number 2" in str(k.value) and secret not in str(k.value)
    with pytest.raises(ecr_sniff.PosKeyError, match="key file .*: cannot read"):
        ecr_sniff.analyze("captures/http-slow-terminal.pcap", key_file="captures/no-such-keys.txt")
    # A capture given as the key file by mistake: named for what it is, not read whole.
    with pytest.raises(ecr_sniff.PosKeyError, match=r"key file .*: not text \(byte \d+ is not UTF-8\); a key file holds one POS-KEY per line"):
        ecr_sniff.analyze("captures/http-slow-terminal.pcap", key_file="captures/http-slow-terminal.pcap")
    with pytest.raises(TypeError):
        ecr_sniff.analyze(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ecr_sniff.analyze([])


def test_damaged_file_is_findings_not_an_exception(in_root: Path, tmp_path: Path) -> None:
    data = (in_root / "captures/http-slow-terminal.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 7])
    records = list(ecr_sniff.analyze(cut, ["f46b1f08bec1f39104792cc79ec9aacd"]))
    damaged = [r for r in records if r["kind"] == "finding" and r["code"] == "damaged-packet"]
    assert len(damaged) == 1 and str(cut) in damaged[0]["detail"]
    assert records[-1]["findings"]["damaged-packet"] == 1


def test_close_and_context_manager_stop_early(in_root: Path) -> None:
    path = "captures/http-plain-all-functypes.pcap"
    records = ecr_sniff.analyze(path, ["f46b1f08bec1f39104792cc79ec9aacd"])
    first = next(records)
    assert first["kind"] == "message"
    records.close()
    assert list(records) == []
    with ecr_sniff.analyze(path) as it:
        assert next(iter(it))["kind"] in ("message", "finding")
    assert list(it) == []
    assert it.files == [path]


def test_other_threads_run_during_analysis(in_root: Path) -> None:
    # The worker holds no GIL: several analyses in threads give the same results
    # as one at a time.
    path = "captures/mixed-http-tcp.pcapng"
    entry = next(e for e in ENTRIES if e["file"] == "mixed-http-tcp.pcapng")
    expected = list(ecr_sniff.analyze(path, entry["keys"]))
    results: list[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def work() -> None:
        got = list(ecr_sniff.analyze(path, entry["keys"]))
        with lock:
            results.append(got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 4 and all(r == expected for r in results)


def test_pandas_dataframe_directly(in_root: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(ecr_sniff.analyze("captures/http-slow-terminal.pcap", ["f46b1f08bec1f39104792cc79ec9aacd"]))
    assert list(df["kind"]) == ["message", "message", "transaction", "message", "message", "transaction", "summary"]
    tx = df[df.kind == "transaction"]
    assert list(tx.latency_ms) == [2504.698, 0.381]


def test_https_with_a_tls_key_log(in_root: Path) -> None:
    name = "captures/tls/tls13-aes128-gcm"
    key = "f46b1f08bec1f39104792cc79ec9aacd"
    recs = list(ecr_sniff.analyze(f"{name}.pcap", key, http_ports=[29001],
                                  tls_keylog=f"{name}.keylog"))
    with open(f"{name.replace('tls/', 'tls/expected/')}.jsonl", encoding="utf-8") as f:
        golden = [json.loads(line) for line in f]
    assert [r for r in recs if r["kind"] != "summary"] == golden[:-1]
    assert {r["transport"] for r in recs if r["kind"] == "message"} == {"https"}
    plain = list(ecr_sniff.analyze(f"{name}.pcap", key, http_ports=[29001]))
    # The capture also holds the same session in plain HTTP on port 29101, which is
    # not analysed here: ecr-on-other-port points at it.
    assert plain[-1]["findings"] == {"tls-encrypted": 1, "ecr-on-other-port": 1}
    with pytest.raises(ecr_sniff.EcrError, match="cannot read TLS key log"):
        ecr_sniff.analyze(f"{name}.pcap", tls_keylog="captures/tls/none.keylog")
