"""kws.evaluate.listen and kws.evaluate.page: ordering, the self-contained page (checked in headless
Chromium), the terminal session with a recorder and scripted keys, and the loop back into
`kws prepare --exclude`."""

from __future__ import annotations

import base64
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws import cli
from kws.audio import SAMPLE_RATE, float_to_int16, read_wav, write_wav
from kws.errors import KWSError
from kws.evaluate import listen
from kws.evaluate.report import Misclassified, compute_report, write_report_files
from kws.manifest import read_manifest
from tests.helpers.chromium import FIRST_AUDIO_LOADED_JS, Chromium
from tests.helpers.listening import Recorder, run_cli, scripted
from tests.helpers.report_checks import PNG_SIGNATURE, assert_png
from tests.helpers.speech_commands import build_speech_commands_tree

LABELS = ["down", "go", "left", "no", "unknown", "yes"]


def write_tone(path: Path, freq_hz: float, rng: np.random.Generator) -> str:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE  # 1 s
    envelope = np.exp(-((t - 0.5) ** 2) / 0.02)
    write_wav(
        path, float_to_int16(0.5 * envelope * np.sin(2 * np.pi * freq_hz * t) + rng.normal(0, 0.01, len(t)))
    )
    return str(path)


def make_eval_dir(root: Path, paths: list[str], labels: list[str], y: np.ndarray, seed: int = 0) -> Path:
    """An evaluation folder as `kws evaluate` writes it, from a fake classifier that is often wrong."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(y), len(labels)))
    logits[np.arange(len(y)), y] += 1.2
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    report = compute_report(labels, y, probs.argmax(1), probs, paths, top_k=3)
    report.manifest, report.checkpoint = str(root / "test_manifest.json"), str(root / "best.pt")
    write_report_files(report, root / "eval")
    return root / "eval"


@pytest.fixture
def eval_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    y = rng.integers(0, len(LABELS), 40)
    paths = [
        write_tone(tmp_path / "clips" / LABELS[c] / f"spk{i:02d}_nohash_0.wav", 250 + 120 * c, rng)
        for i, c in enumerate(y)
    ]
    return make_eval_dir(tmp_path, paths, LABELS, y)


def test_sort_orders(eval_dir: Path) -> None:
    errors = listen.listen_errors(eval_dir, top=0, html=False).errors
    assert len(errors) > 10
    conf = [e.confidence for e in errors]
    assert conf == sorted(conf)  # default: least confident first
    desc = [e.confidence for e in listen.sort_errors(errors, "-confidence")]
    assert desc == sorted(conf, reverse=True)
    grouped = listen.sort_errors(errors, "pair")
    pairs = [(e.label, e.predicted) for e in grouped]
    runs = [p for i, p in enumerate(pairs) if i == 0 or pairs[i - 1] != p]
    assert len(runs) == len(set(pairs)), "each confusion pair forms one contiguous group"
    sizes = [pairs.count(p) for p in runs]
    assert sizes == sorted(sizes, reverse=True), "most frequent pair first"
    for p in runs:
        within = [e.confidence for e in grouped if (e.label, e.predicted) == p]
        assert within == sorted(within)
    with pytest.raises(KWSError, match="unknown sort order"):
        listen.sort_errors(errors, "loudness")


def test_page_is_self_contained(eval_dir: Path) -> None:
    result = listen.listen_errors(eval_dir, top=5, sort="-confidence")
    assert result.page is not None and result.page.n_cards == 5 and not result.page.missing
    page = (eval_dir / "errors.html").read_text()
    assert page.count("<audio ") == 5 and page.count('class="card"') == 5
    # Nothing is fetched: every src is a data URI and there are no links to other documents.
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert not re.search(r"<link|@import|https?://", page)
    audio = re.search(r'<audio [^>]*src="data:audio/wav;base64,([^"]+)"', page)
    assert audio is not None
    samples, rate = sf.read(io.BytesIO(base64.b64decode(audio.group(1))), dtype="int16")
    first = result.errors[0]
    assert rate == SAMPLE_RATE and np.array_equal(samples, read_wav(Path(first.audio_filepath)))
    picture = re.search(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert picture is not None and base64.b64decode(picture.group(1))[:8] == PNG_SIGNATURE


def test_missing_clip_gets_a_card_without_audio(eval_dir: Path) -> None:
    errors = listen.listen_errors(eval_dir, top=3, html=False).errors
    Path(errors[1].audio_filepath).unlink()
    result = listen.listen_errors(eval_dir, top=3)
    assert result.page is not None and result.page.missing == [errors[1].audio_filepath]
    page = (eval_dir / "errors.html").read_text()
    assert page.count('class="card"') == 3 and page.count("<audio ") == 2 and "not found" in page


JS_CHECKS = (
    """(async () => {
  const visible = () => Array.from(document.querySelectorAll('.card')).filter((c) => !c.hidden);
"""
    + FIRST_AUDIO_LOADED_JS
    + """  const before = { cards: visible().length, audio: document.querySelectorAll('audio').length };
  const select = document.getElementById('f-true');
  select.value = LABEL;
  select.dispatchEvent(new Event('input'));
  const filtered = visible().map((c) => c.dataset.true);
  const hidden = document.querySelectorAll('.card[hidden]').length;
  const shown = document.getElementById('shown').textContent;
  const slider = document.getElementById('f-max');
  slider.value = MAXCONF;
  slider.dispatchEvent(new Event('input'));
  const lowConf = visible().map((c) => parseFloat(c.dataset.conf));
  document.getElementById('f-reset').click();
  return { before, duration: audio.duration, filtered, hidden, shown, lowConf, after: visible().length };
})()"""
)


def test_page_in_headless_chromium(eval_dir: Path, tmp_path: Path) -> None:
    result = listen.listen_errors(eval_dir, top=0)
    assert result.page is not None
    label = result.errors[0].label
    n_label = sum(e.label == label for e in result.errors)
    max_conf = sorted(e.confidence for e in result.errors if e.label == label)[0] + 1e-3
    with Chromium(tmp_path) as browser:
        page = browser.open(result.page.path.as_uri())
        checks = page.evaluate(JS_CHECKS.replace("LABEL", repr(label)).replace("MAXCONF", f"{max_conf:.4f}"))
        shot = page.screenshot(tmp_path / "errors.png")
        errors = browser.console_errors()
    assert errors == [], errors
    n = len(result.errors)
    assert checks["before"] == {"cards": n, "audio": n}
    assert checks["duration"] == pytest.approx(1.0, abs=0.01)
    assert checks["filtered"] == [label] * n_label and checks["hidden"] == n - n_label
    assert checks["shown"] == f"showing {n_label} of {n} errors"
    assert len(checks["lowConf"]) >= 1 and all(c <= max_conf + 0.01 for c in checks["lowConf"])
    assert checks["after"] == n
    assert_png(shot, (1000, 800))


def test_play_session_with_recorder_and_keys(eval_dir: Path) -> None:
    errors = listen.listen_errors(eval_dir, top=6, html=False).errors
    (eval_dir / listen.SUSPECT_FILE).write_text("/earlier/suspect.wav\n")
    recorder = Recorder()
    keys = scripted(["enter", "r", "m", "p", "m", "x", "n", "m", "q", "n"])
    summary = listen.play_session(eval_dir, errors, output=recorder, keys=keys)
    # e0, next e1, replay e1, mark e1 -> e2, back to e1, mark again (no duplicate) -> e2, unknown key (no
    # replay), next e3, mark e3 -> e4, quit.
    order = [0, 1, 1, 2, 1, 2, 3, 4]
    assert len(recorder.played) == len(order)
    for samples, i in zip(recorder.played, order, strict=True):
        assert np.array_equal(samples, read_wav(Path(errors[i].audio_filepath)))
    assert recorder.stopped == 1
    assert summary.n_heard == 5
    assert summary.marked == [errors[1].audio_filepath, errors[3].audio_filepath]
    lines = (eval_dir / listen.SUSPECT_FILE).read_text().splitlines()
    assert lines == ["/earlier/suspect.wav", errors[1].audio_filepath, errors[3].audio_filepath]


def test_the_session_shows_each_clip_and_its_news_through_the_cli(
    eval_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = listen.listen_errors(eval_dir, top=2, html=False).errors
    shown: list[listen.ClipView | str] = []
    listen.play_session(
        eval_dir, errors, output=Recorder(), keys=scripted(["m", "x", "q"]), show=shown.append
    )
    assert [type(s) for s in shown] == [listen.ClipView, str, listen.ClipView, str]
    first = shown[0]
    assert isinstance(first, listen.ClipView) and (first.position, first.total) == (1, 2) and not first.marked
    assert shown[1] == f"marked {errors[0].audio_filepath}" and "unknown key 'x'" in str(shown[3])
    assert capsys.readouterr().out == ""  # the library printed nothing itself
    for item in [*shown, "marked /clips/[/]odd [bold].wav"]:  # brackets in a path are text, not markup
        cli._show_clip(item)
    out = capsys.readouterr().out
    assert "error 1/2" in out and errors[0].predicted in out and "marked" in out and "unknown key" in out
    assert listen.KEYS_HELP in out and "/clips/[/]odd [bold].wav" in out


def test_play_stops_at_the_end(eval_dir: Path) -> None:
    errors = listen.listen_errors(eval_dir, top=2, html=False).errors
    recorder = Recorder()
    summary = listen.play_session(eval_dir, errors, output=recorder, keys=scripted(["n", "n", "n"]))
    assert len(recorder.played) == 2 and summary.n_heard == 2 and summary.marked == []
    assert not (eval_dir / listen.SUSPECT_FILE).exists()


def test_cli_play_without_sounddevice_fails_before_any_work(
    eval_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as when kws[audio] is missing
    assert run_cli(monkeypatch, "listen-errors", str(eval_dir), "--play") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "kws[audio]" in err
    assert not (eval_dir / "errors.html").exists()


def test_cli_writes_page_and_prints_url(
    eval_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "listen-errors", str(eval_dir), "--top", "4", "--sort", "pair") == 0
    out = capsys.readouterr().out
    page = (eval_dir / "errors.html").resolve()
    assert f"wrote {page} (4 clips)" in out and page.as_uri() in out
    assert run_cli(monkeypatch, "listen-errors", str(eval_dir / "nowhere")) == 1
    assert "does not exist" in capsys.readouterr().err


def test_mark_in_the_terminal_then_prepare_excludes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop a user runs: evaluate -> listen-errors --play -> m -> prepare --exclude drops the clips."""
    tree = build_speech_commands_tree(tmp_path / "sc", clip_s=(0.3, 0.5))
    data_args = [
        "prepare",
        "--source",
        str(tree.root),
        "--data-root",
        str(tmp_path / "data"),
        "--workers",
        "1",
    ]
    assert run_cli(monkeypatch, *data_args) == 0
    test_manifest = tree.root / "test_manifest.json"
    entries = read_manifest(test_manifest)
    labels = sorted({e.label for e in entries})
    y = np.array([labels.index(e.label) for e in entries])
    eval_dir = make_eval_dir(tmp_path / "run", [e.audio_filepath for e in entries], labels, y, seed=2)

    recorder = Recorder()
    monkeypatch.setattr(listen, "SoundDeviceOutput", lambda: recorder)
    monkeypatch.setattr(listen, "terminal_keys", lambda: scripted(["m", "n", "m", "q"]))
    capsys.readouterr()
    assert run_cli(monkeypatch, "listen-errors", str(eval_dir), "--play", "--no-html") == 0
    out = capsys.readouterr().out
    suspects = eval_dir / listen.SUSPECT_FILE
    marked = suspects.read_text().splitlines()
    assert len(marked) == 2 and len(recorder.played) == 4
    assert "marked 2 as mislabeled" in out and f"--exclude {suspects}" in out
    assert not (eval_dir / "errors.html").exists()

    assert run_cli(monkeypatch, *data_args, "--exclude", str(suspects)) == 0
    assert "Excluded 2 clips" in capsys.readouterr().out
    kept = {e.audio_filepath for e in read_manifest(test_manifest)}
    assert len(kept) == len(entries) - 2 and not kept & set(marked)


def test_mark_suspect_adds_each_path_once(eval_dir: Path) -> None:
    errors: list[Misclassified] = listen.listen_errors(eval_dir, top=1, html=False).errors
    assert listen.mark_suspect(eval_dir, errors[0].audio_filepath) is True
    assert listen.mark_suspect(eval_dir, errors[0].audio_filepath) is False
    assert listen.read_suspects(eval_dir) == [errors[0].audio_filepath]


def test_keys_from_a_pipe_are_read_a_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\nR\n\nmark\n"))
    keys = listen.terminal_keys()
    assert [keys() for _ in range(6)] == ["n", "r", "enter", "m", "q", "q"]  # end of input quits


def test_a_perfect_model_gets_an_empty_page(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = [write_tone(tmp_path / f"c{i}.wav", 300 + 100 * i, rng) for i in range(3)]
    y = np.array([0, 1, 2])
    probs = np.eye(3) * 0.9 + 0.1 / 3
    write_report_files(compute_report(["a", "b", "c"], y, y, probs, paths), tmp_path / "eval")
    result = listen.listen_errors(tmp_path / "eval")
    assert result.errors == [] and result.page is not None and result.page.n_cards == 0
    page = (tmp_path / "eval" / "errors.html").read_text()
    assert "No confusions." in page and "<audio " not in page
    summary = listen.play_session(tmp_path / "eval", [], output=Recorder(), keys=scripted([]))
    assert summary.n_heard == 0


def test_report_json_given_instead_of_its_folder(
    eval_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "listen-errors", str(eval_dir / "report.json")) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: {eval_dir / 'report.json'} is a file; pass the folder of the evaluation that holds it "
        f"instead: kws listen-errors {eval_dir}\n"
    )
