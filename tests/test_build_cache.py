"""Tests of spikeforge.runtime.build: compiling generated C++ and the on-disk cache."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from spikeforge.errors import BuildError, CompilerNotFoundError
from spikeforge.runtime import build as B

REPO = Path(__file__).resolve().parents[1]
GXX = shutil.which("g++") or "/usr/bin/g++"

pytestmark = pytest.mark.skipif(not os.path.exists(GXX), reason="needs g++")


def fresh_source(value: int = 42) -> str:
    """A tiny library, made unique so that no test shares a key (nor a dlopen'ed path)."""
    return f'// {uuid.uuid4().hex}\nextern "C" int answer() {{ return {value}; }}\n'


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(root))
    monkeypatch.setenv("CXX", GXX)
    return root


def test_cold_build_then_warm_hit(cache):
    src = fresh_source()
    cold = B.build_shared_library(src, name="answer", describe="test model")
    assert not cold.from_cache
    assert cold.path == cache / cold.key[:2] / cold.key / "libanswer.so"
    entry = cold.path.parent
    assert (entry / "source.cpp").read_text() == src
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["key"] == cold.key and meta["sha256"] == B._sha256_file(cold.path)

    warm = B.build_shared_library(src, name="answer")
    assert warm.from_cache and warm.path == cold.path and warm.key == cold.key
    lib, res = B.build_and_load(src, name="answer")
    assert res.from_cache and lib.answer() == 42
    assert cold.seconds > 0 and warm.seconds >= 0


def test_key_depends_on_source_flags_and_name():
    src = fresh_source()
    base = B.cache_key(src)
    assert B.cache_key(src) == base
    assert B.cache_key(src + "\n") != base
    assert B.cache_key(src, flags=["-O2", "-shared", "-fPIC"]) != base
    assert B.cache_key(src, name="other") != base
    r1 = B.build_shared_library(src)
    r2 = B.build_shared_library(src, flags=["-O1", "-std=c++17", "-shared", "-fPIC"])
    assert r1.key == base and r2.key != r1.key and r2.path != r1.path


def test_default_flags_are_strict_and_native_only_with_cpu_in_key(monkeypatch):
    flags = B._default_flags(GXX)
    assert "-ffp-contract=off" in flags and "-ffast-math" not in flags
    assert ("-fopenmp" in flags) != ("-Wno-unknown-pragmas" in flags)
    monkeypatch.setenv("SPIKEFORGE_PORTABLE", "1")
    portable = B._default_flags(GXX)
    assert "-march=native" not in portable
    src = 'extern "C" int answer() { return 42; }\n'
    if "-march=native" in flags:
        # another CPU would get another key for the native build, the same for the portable one
        native_key = B.cache_key(src, flags=flags, cxx=GXX)
        portable_key = B.cache_key(src, flags=portable, cxx=GXX)
        monkeypatch.setattr(B, "cpu_fingerprint", lambda: "some-other-cpu")
        assert B.cache_key(src, flags=flags, cxx=GXX) != native_key
        assert B.cache_key(src, flags=portable, cxx=GXX) == portable_key


@pytest.mark.parametrize("damage", ["garbage", "truncate", "missing_meta", "garbage_with_matching_meta"])
def test_corrupt_entry_is_detected_and_rebuilt(damage, caplog):
    src = fresh_source(7 * 6)
    first = B.build_shared_library(src)  # not loaded: dlopen would cache the handle by path
    so = first.path
    if damage == "garbage":
        so.write_bytes(b"this is not an ELF file" * 100)
    elif damage == "truncate":
        so.write_bytes(so.read_bytes()[: so.stat().st_size // 2])
    elif damage == "missing_meta":
        (so.parent / "meta.json").unlink()
    else:  # a damaged .so the checksum cannot catch: only dlopen notices
        so.write_bytes(so.read_bytes()[:200])
        meta = json.loads((so.parent / "meta.json").read_text())
        meta["sha256"] = B._sha256_file(so)
        (so.parent / "meta.json").write_text(json.dumps(meta))

    with caplog.at_level(logging.WARNING, logger="spikeforge.build"):
        lib, res = B.build_and_load(src)
    assert lib.answer() == 42
    assert res.path == so and not res.from_cache
    assert "rebuil" in caplog.text
    assert B.build_shared_library(src).from_cache  # and the rebuilt entry is sound


def test_load_library_raises_corrupt_library_error(tmp_path):
    bad = tmp_path / "libbad.so"
    bad.write_bytes(b"\x7fELF garbage")
    with pytest.raises(B.CorruptLibraryError) as info:
        B.load_library(bad)
    assert isinstance(info.value, BuildError) and str(bad) in str(info.value)


CHILD = """
import json, os, sys, time
from spikeforge.runtime.build import build_shared_library, load_library
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
res = build_shared_library(open(sys.argv[2]).read(), describe="concurrent")
print(json.dumps({"from_cache": res.from_cache, "path": str(res.path),
                  "answer": load_library(res.path).answer()}))
"""


@pytest.mark.parametrize("n", [4])
def test_concurrent_builds_compile_once(n, tmp_path, cache):
    src_file = tmp_path / "src.cpp"
    src_file.write_text(fresh_source())
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(go), str(src_file)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    time.sleep(0.5)  # let every child import and start polling
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(not r["from_cache"] for r in results) == 1
    assert len({r["path"] for r in results}) == 1
    assert all(r["answer"] == 42 for r in results)
    # nothing left behind but the entry and its lock file
    entry = Path(results[0]["path"]).parent
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name, entry.name + ".lock"]


def test_compile_error_is_a_build_error(cache):
    src = 'extern "C" int answer() { return 42 }  // missing semicolon\n'
    with pytest.raises(BuildError) as info:
        B.build_shared_library(src, describe="population 'exc' (model LIF)")
    err = info.value
    assert not isinstance(err, subprocess.CalledProcessError)
    assert err.__cause__ is None or not isinstance(err.__cause__, subprocess.CalledProcessError)
    msg = str(err)
    assert msg.startswith("failed to compile the generated code for population 'exc' (model LIF)\n\n")
    assert "error" in msg and "source.cpp:1" in msg  # the compiler's own words
    assert "missing semicolon" in msg  # the offending line is quoted
    kept = cache / "failed" / f"{B.cache_key(src)}.cpp"
    assert kept.read_text() == src and str(kept) in msg
    # no entry and no temporary directory was left behind
    key = B.cache_key(src)
    assert [p.name for p in (cache / key[:2]).iterdir()] == [f"{key}.lock"]


def test_compile_error_message_is_trimmed():
    src = "\n".join(f"int f{i}() {{ return x{i}; }}" for i in range(100))
    with pytest.raises(BuildError) as info:
        B.build_shared_library(src, line_comments=False)
    msg = str(info.value)
    assert "more lines)" in msg and "generated lines in question" not in msg
    assert len(msg.splitlines()) < 50


def test_missing_compiler_named_by_cxx(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/bin/g++-99")
    with pytest.raises(CompilerNotFoundError, match="/nonexistent/bin/g\\+\\+-99"):
        B.find_cxx_compiler()
    with pytest.raises(CompilerNotFoundError):
        B.build_shared_library(fresh_source())


def test_no_compiler_on_path(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(CompilerNotFoundError) as info:
        B.find_cxx_compiler()
    msg = str(info.value)
    assert "no C++ compiler" in msg and "g++" in msg and "clang++" in msg
    assert "apt-get install g++" in msg and "CXX" in msg
    with pytest.raises(CompilerNotFoundError):
        B.build_shared_library(fresh_source())


def test_compiler_identity():
    ident = B.compiler_identity(GXX)
    assert os.path.realpath(GXX) in ident and "\n" not in ident
    assert B.find_cxx_compiler() == GXX


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("SPIKEFORGE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert B.cache_dir() == tmp_path / "xdg" / "spikeforge" and B.cache_dir().is_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert B.cache_dir() == tmp_path / "home" / ".cache" / "spikeforge"


def test_killed_build_leaves_nothing_half_published(cache):
    src = fresh_source()
    key = B.cache_key(src)
    parent = cache / key[:2]
    parent.mkdir(parents=True)
    # What a build killed during compilation or during meta.json leaves behind:
    leftover = parent / f"{key}.tmp-killed"
    leftover.mkdir()
    (leftover / "source.cpp").write_text(src)
    (leftover / "libmodel.so").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 50)  # partial
    (parent / f"{key}.lock").touch()

    lib, res = B.build_and_load(src)
    assert not res.from_cache and lib.answer() == 42
    assert res.path.parent == parent / key
    assert not leftover.exists()  # stale temp dirs of this key are cleaned under the lock

    # An entry directory without meta.json (never produced by a build, but e.g. by a bad
    # copy of the cache) is treated as corrupt, not as a hit.
    src2 = fresh_source()
    key2 = B.cache_key(src2)
    half = cache / key2[:2] / key2
    half.mkdir(parents=True)
    (half / "libmodel.so").write_bytes(b"\x7fELF")
    res2 = B.build_shared_library(src2)
    assert not res2.from_cache and (half / "meta.json").is_file()
    assert B.load_library(res2.path).answer() == 42


def test_compiler_probes_are_remembered_across_processes(cache):
    """A warm start runs no compiler: identity and flag probes are kept in the cache."""
    code = ("from spikeforge.runtime import build as B; import sys;"
            "print(B.compiler_identity(sys.argv[1]), B._supports_openmp(sys.argv[1]))")
    first = subprocess.run([sys.executable, "-c", code, GXX], capture_output=True, text=True, check=True).stdout
    probes = sorted((cache / "probes").glob("*.json"))
    assert len(probes) == 2
    facts = {json.loads(p.read_text())["kind"]: json.loads(p.read_text())["value"] for p in probes}
    assert facts["identity"] in first
    # a remembered value is what the next process sees (proof that it does not probe again)
    for p in probes:
        data = json.loads(p.read_text())
        if data["kind"] == "identity":
            data["value"] = "remembered-identity"
            p.write_text(json.dumps(data))
    again = subprocess.run([sys.executable, "-c", code, GXX], capture_output=True, text=True, check=True).stdout
    assert again.startswith("remembered-identity")
