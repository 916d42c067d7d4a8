"""Where the pipeline's time goes: the workers' timing counters, the summary's time split,
and torch's thread count set where the model runs."""
import json
import re
import threading

import pytest
from click.testing import CliRunner

pytest.importorskip("apache_beam")

from bltdata.cli.main import main  # noqa: E402
from bltdata.pipelines import patch as pipeline  # noqa: E402


def test_threads_are_set_in_the_thread_that_scores(monkeypatch):
    """Beam loads the model in one thread and runs bundles in another; torch's thread count
    set only at load time left 2-thread scoring 13-25× slower than 1 thread (measured)."""
    calls = []
    monkeypatch.setattr(pipeline, "set_threads", lambda threads: calls.append((threads, threading.get_ident())))
    handler = pipeline.EntropyModelHandler("default", device="cpu", batch_bytes=None, threads=2, precision="fp32")
    engine = handler.load_model()
    from bltdata.batching import DocBatch

    def score():
        batch = DocBatch(source="x", key="x", shard_index=0, batch_index=0, doc_ids=["a", "b"],
                         data=[b"hello", b"world!"])
        handler.run_inference([batch], engine)
        handler.run_inference([batch], engine)
        assert [len(h) for h in batch.entropies] == [6, 7]
        calls.append(("scored in", threading.get_ident()))

    worker = threading.Thread(target=score)
    worker.start()
    worker.join()
    scoring_thread = calls[-1][1]
    assert calls[-1][0] == "scored in"
    assert (2, scoring_thread) in calls  # set in the scoring thread ...
    assert calls.count((2, scoring_thread)) == 1  # ... once, not per batch


def test_summary_shows_the_time_split(tmp_path):
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"line {i} " * 40}) for i in range(30)) + "\n")
    result = CliRunner().invoke(main, ["patch", str(corpus), "-o", str(tmp_path / "out"), "--no-progress",
                                       "--precision", "fp32"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("time split"))
    seconds = {name: float(re.search(rf"{name} (\d+\.\d) s", line).group(1))
               for name in ("read", "model load", "entropies", "patch", "write", r"other \(Beam start-up, scheduling\)")}
    assert len(seconds) == 6
    assert seconds["entropies"] > 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["params"]["precision"] == "fp32"
