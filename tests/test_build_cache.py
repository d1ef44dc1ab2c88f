"""Tests of spikeforge.runtime.build: compiling generated C++ and the on-disk cache."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from spikeforge.errors import BuildError, CacheError, CompilerNotFoundError
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


@pytest.mark.parametrize("damage", ["garbage", "truncate", "missing_meta", "garbage_with_matching_meta",
                                    "another_keys_entry"])
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
    elif damage == "another_keys_entry":  # a sound entry, copied to the wrong place
        other = B.build_shared_library(fresh_source(7)).path.parent
        shutil.rmtree(so.parent)
        shutil.copytree(other, so.parent)
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


@pytest.mark.slow  # a race of 4 processes
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


# --------------------------------------------------------------------------- unusable caches and held locks


def test_a_cache_dir_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from spikeforge.cli import main

    afile = tmp_path / "not-a-dir"
    afile.write_text("")
    net = tmp_path / "net.yaml"
    net.write_text("name: tiny\ndt: 0.1\npopulations:\n  a: {size: 10, model: lif}\n")
    for path, why in ((afile, "it is a file, not a directory"),
                      (afile / "sub", f"{afile} is a file, not a directory")):
        monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(path))
        with pytest.raises(CacheError, match=f"the compile cache {path} \\(SPIKEFORGE_CACHE_DIR\\) cannot be "
                                             f"created: {why}; set SPIKEFORGE_CACHE_DIR"):
            B.build_shared_library(fresh_source())
        assert main(["run", str(net), "--duration", "1"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("spikeforge: error: the compile cache") and len(err.splitlines()) == 1


def _read_only_dirs_are_writable(tmp: Path) -> bool:
    """True for root (CAP_DAC_OVERRIDE), which writes into read-only directories."""
    tmp.mkdir()
    tmp.chmod(0o555)
    try:
        (tmp / "probe").touch()
        return True
    except PermissionError:
        return False
    finally:
        tmp.chmod(0o755)


def test_a_read_only_cache_serves_its_entries_and_refuses_new_builds_clearly(cache, tmp_path):
    if _read_only_dirs_are_writable(tmp_path / "probe-dir"):
        pytest.skip("this user writes into read-only directories (root)")
    src = fresh_source()
    built = B.build_shared_library(src)
    for d in (cache, *cache.iterdir()):
        d.chmod(0o555)
    try:
        assert B.build_shared_library(src).from_cache  # published entries are read without writing
        with pytest.raises(CacheError, match=f"the compile cache {cache} .* is not writable"):
            B.build_shared_library(fresh_source(7))
    finally:
        for d in (cache, *cache.iterdir()):
            d.chmod(0o755)
    assert built.path.is_file()


HOLDER = """
import sys, time
from pathlib import Path
from spikeforge.runtime.build import _KeyLock
with _KeyLock(Path(sys.argv[1]), "a test library"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(src: str, cache: Path, seconds: float) -> subprocess.Popen:
    """A real process holding the build lock of ``src`` (through the real lock code)."""
    key = B.cache_key(src)
    lock = cache / key[:2] / f"{key}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(seconds)], env=env,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert lock.read_text().split()[0] == str(holder.pid)  # the holder says who it is
    return holder


@pytest.mark.slow  # waits out a 2 s lock timeout
def test_a_stopped_builder_is_reported_then_the_wait_times_out(cache, monkeypatch, caplog):
    src = fresh_source()
    holder = hold_lock(src, cache, 600)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        monkeypatch.setenv("SPIKEFORGE_LOCK_TIMEOUT", "2")
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="spikeforge.build"), \
                pytest.raises(CacheError, match=f"gave up waiting for another build of test library after 2 s: the "
                                                f"lock .* is held by pid {holder.pid} \\(stopped\\); resume it "
                                                f"\\(kill -CONT {holder.pid}\\) or end it, or set "
                                                "SPIKEFORGE_LOCK_TIMEOUT"):
            B.build_shared_library(src, describe="test library")
        assert 2 <= time.monotonic() - t0 < 5
        notices = [r.getMessage() for r in caplog.records if "waiting for another build" in r.getMessage()]
        assert len(notices) == 1
        assert notices[0].startswith(f"waiting for another build of test library, lock held by pid {holder.pid} "
                                     "(stopped) ...")
    finally:
        holder.kill()  # SIGKILL ends a stopped process too
        holder.wait()
    # the holder is dead: the kernel dropped its lock, the build goes ahead at once
    t0 = time.monotonic()
    res = B.build_shared_library(src)
    assert not res.from_cache and B.load_library(res.path).answer() == 42
    assert time.monotonic() - t0 < B.LOCK_NOTICE_SECONDS


@pytest.mark.slow  # waits 1.5 s for the other builder
def test_a_running_builder_is_waited_for_beyond_the_timeout(cache, monkeypatch, caplog):
    """The timeout counts only while the holder is stopped (or cannot be seen): a slow but
    live build of the same code is waited for (and said so), and its result used."""
    src = fresh_source()
    holder = hold_lock(src, cache, 1.5)
    monkeypatch.setenv("SPIKEFORGE_LOCK_TIMEOUT", "0.5")
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="spikeforge.build"):
        res = B.build_shared_library(src, describe="test library")
    assert time.monotonic() - t0 >= 1.0  # it did wait for the holder
    assert f"waiting for another build of test library, lock held by pid {holder.pid} ..." in caplog.text
    assert not res.from_cache and B.load_library(res.path).answer() == 42
    holder.wait(timeout=10)


def test_a_bad_lock_timeout_is_named(cache, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_LOCK_TIMEOUT", "soon")
    src = fresh_source()
    holder = hold_lock(src, cache, 600)
    try:
        with pytest.raises(CacheError, match="SPIKEFORGE_LOCK_TIMEOUT must be a number of seconds, got 'soon'"):
            B.build_shared_library(src)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("content", ["[1]", '{"kind": "openmp", "value": "yes"}', '{"value": 3}', "{"])
def test_damaged_compiler_probes_are_probed_again(cache, content):
    assert B._probe_openmp(GXX) in (True, False)
    B._supports_openmp.cache_clear()
    B._supports_openmp(GXX)
    probes = list((cache / "probes").glob("*.json"))
    assert probes
    for p in probes:
        p.write_text(content)
    B._supports_openmp.cache_clear()
    B.compiler_identity.cache_clear()
    try:
        assert B._supports_openmp(GXX) is B._probe_openmp(GXX)
        assert isinstance(B.compiler_identity(GXX), str)
    finally:
        B._supports_openmp.cache_clear()
        B.compiler_identity.cache_clear()
    assert all(json.loads(p.read_text())["kind"] in ("openmp", "identity") for p in probes)
