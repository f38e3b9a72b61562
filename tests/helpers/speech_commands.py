"""Tiny Speech-Commands-shaped datasets and a local HTTP server, for tests (import, don't copy).

    from tests.helpers.speech_commands import LocalServer, build_speech_commands_tree, make_tar_gz

    tree = build_speech_commands_tree(tmp_path / "src")            # real 16-bit 16 kHz wavs, both lists
    archive = make_tar_gz(tree.root, tmp_path / "www" / "speech_commands_v0.01.tar.gz")
    with LocalServer(tmp_path / "www") as server:                   # 127.0.0.1, ephemeral port, threaded
        url = server.url(archive.name)                              # server.mode: normal|drop|ignore_range

Nothing here touches any address other than 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import socket
import tarfile
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000  # Hz
WORDS = ("yes", "no", "up", "down", "left", "bed", "cat")  # 5 of the `sub` words + 2 "unknown" words
NOISE_S = 11.0  # seconds: the 10 % validation/test region of a recording must hold a 1.0 s silence window


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write int16 samples `(samples,)` or `(samples, channels)` as 16-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples.astype(np.int16), rate, subtype="PCM_16", format="WAV")
    return path


def tone(n_samples: int, rng: np.random.Generator, amplitude: float = 3000.0) -> np.ndarray:
    """A short tone plus a little noise, int16."""
    t = np.arange(n_samples) / SAMPLE_RATE
    wave = amplitude * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + rng.normal(0, 100, n_samples)
    return wave.astype(np.int16)


@dataclass
class SpeechCommandsTree:
    root: Path
    words: tuple[str, ...]
    speakers: dict[str, list[str]]  # split -> speaker ids that belong to it
    clips: list[str] = field(default_factory=list)  # relative paths of every word clip
    unlisted: list[str] = field(default_factory=list)  # clips of listed speakers that the lists omit

    def split_of(self, clip: str) -> str:
        speaker = Path(clip).name.split("_nohash_")[0]
        return next(split for split, ids in self.speakers.items() if speaker in ids)


def build_speech_commands_tree(
    root: Path,
    words: tuple[str, ...] = WORDS,
    n_speakers: int = 8,
    n_val_speakers: int = 2,
    n_test_speakers: int = 2,
    clips_per_word: int = 2,
    clip_s: tuple[float, float] = (0.2, 0.5),
    n_noise: int = 2,
    noise_s: float = NOISE_S,
    seed: int = 0,
) -> SpeechCommandsTree:
    """Write `<word>/<speaker>_nohash_<k>.wav` for every speaker and word, `_background_noise_/*.wav`,
    and both lists. Each listed speaker has one clip that the lists omit: the split rule goes by speaker,
    so it must still land in that speaker's split."""
    rng = np.random.default_rng(seed)
    ids = [hashlib.sha1(f"speaker{seed}-{i}".encode()).hexdigest()[:8] for i in range(n_speakers)]
    n_listed = n_val_speakers + n_test_speakers
    speakers = {
        "validation": ids[:n_val_speakers],
        "test": ids[n_val_speakers:n_listed],
        "train": ids[n_listed:],
    }
    tree = SpeechCommandsTree(root, words, speakers)
    lists: dict[str, list[str]] = {"validation": [], "test": []}
    for word in words:
        for speaker in ids:
            for k in range(clips_per_word):
                rel = f"{word}/{speaker}_nohash_{k}.wav"
                n = int(rng.uniform(*clip_s) * SAMPLE_RATE)
                write_wav(root / rel, tone(n, rng))
                tree.clips.append(rel)
                split = tree.split_of(rel)
                if split in lists:
                    if word == words[0] and k == 0:
                        tree.unlisted.append(rel)
                    else:
                        lists[split].append(rel)
    for i in range(n_noise):
        noise = rng.normal(0, 300, int(noise_s * SAMPLE_RATE))
        write_wav(root / "_background_noise_" / f"noise_{i}.wav", noise)
    (root / "validation_list.txt").write_text("".join(f"{p}\n" for p in lists["validation"]))
    (root / "testing_list.txt").write_text("".join(f"{p}\n" for p in lists["test"]))
    (root / "README.md").write_text("A tiny Speech-Commands-shaped dataset built by the tests.\n")
    return tree


def copy_tree(tree: SpeechCommandsTree, dest: Path) -> SpeechCommandsTree:
    """A fresh copy of a built tree (faster than building again; build one per session, copy per test)."""
    shutil.copytree(tree.root, dest)
    return replace(tree, root=dest, clips=list(tree.clips), unlisted=list(tree.unlisted))


def make_tar_gz(tree_root: Path, archive: Path) -> Path:
    """Pack a tree the way the official archive is packed: members `./<word>/...` at the top level."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(tree_root.rglob("*")):
            tar.add(path, arcname=f"./{path.relative_to(tree_root)}", recursive=False)
    return archive


def make_malicious_tar_gz(archive: Path, kind: str) -> tuple[Path, str]:
    """A small archive with one unsafe member after a harmless one; returns (archive, the bad member's name).
    kind: dotdot | absolute | symlink | hardlink | device."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    bad = {
        "dotdot": "./yes/../../evil.txt",
        "absolute": "/tmp/kws-evil.txt",
        "symlink": "./yes/escape",
        "hardlink": "./yes/hard",
        "device": "./yes/null",
    }[kind]
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("./validation_list.txt")
        ok.size = 0
        tar.addfile(ok, io.BytesIO(b""))
        info = tarfile.TarInfo(bad)
        payload = b"owned\n"
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../../../etc"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        else:
            info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload) if info.isreg() else None)
    return archive, bad


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        owner = self.server.owner
        owner.requests.append(dict(self.headers.items()))
        path = owner.root / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and owner.mode != "ignore_range":
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            if owner.mode == "wrong_range":  # a broken proxy: a 206 for bytes other than those asked for
                start //= 2
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if owner.mode == "drop":  # send half, then hang up: an interrupted download
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LocalServer


class LocalServer:
    """Serve the files of `root` on 127.0.0.1 at an ephemeral port, from a thread of the test process.

    `mode`: "normal" (Range honoured), "drop" (send half the body, then close the connection),
    "ignore_range" (always 200 with the whole file) or "wrong_range" (a 206 from half the asked-for
    offset). `requests` holds the headers of every GET."""

    def __init__(self, root: Path, mode: str = "normal") -> None:
        self.root = Path(root)
        self.mode = mode
        self.requests: list[dict[str, str]] = []
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def range_headers(self) -> list[str]:
        return [h["Range"] for h in self.requests if "Range" in h]

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
