"""Messages that name the problem and a fix that works (issue 23, item 16).

- A tab-separated log named ``.csv`` was told to "name the columns" and "pass --format", and
  neither could work: its header is now named tab-separated, with a conversion that works.
- A train shard that answers HTTP 404 was warned about as ``<HTTPError 404: 'File not found'>``;
  the warning now names the shard's URL.
"""

from __future__ import annotations

import functools
import http.server
import logging
import shlex
import subprocess
import threading

from tests.fixtures_dataset import write_dataset
from tests.test_bad_input import LOCAL, good_rows, ingest, one_error_line, snapshot, write_csv
from tests.test_trainer_bad_input import ID_RUN, _sequences, train


def test_a_tab_separated_csv_is_named_and_its_conversion_works(tmp_path, capsys):
    rows = good_rows()
    tabs = tmp_path / "pairs.csv"
    tabs.write_text("user\titem\ttimestamp\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows))
    status, err = ingest(capsys, "--interactions", str(tabs), "--output", str(tmp_path / "out"), *LOCAL)

    assert status == 2
    line = one_error_line(err)
    assert "looks tab-separated" in line and "pass --format" not in line and "name the columns" not in line
    assert sorted(snapshot(tmp_path)) == ["pairs.csv"]
    # the conversion the message gives, run as it is printed, makes a log that is ingested
    command = line.split("e.g. ", 1)[1].split(" (if", 1)[0]
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    assert (tmp_path / "commas.csv").read_text() == write_csv(tmp_path / "expected.csv", rows).read_text()
    status, err = ingest(
        capsys, "--interactions", str(tmp_path / "commas.csv"), "--output", str(tmp_path / "out"), *LOCAL
    )
    assert status == 0, err
    assert shlex.split(command)[:3] == ["tr", "\\t", ","]


def test_a_train_shard_that_answers_404_is_named_in_the_warning(tmp_path, capsys, caplog):
    data = write_dataset(tmp_path / "ds", _sequences(), max_seq_len=5, version="v1")
    (data / "train/train-000001.tar").unlink()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/ds"
    try:
        with caplog.at_level(logging.WARNING, logger="trainer.shard_reader"):
            status, _, _ = train(capsys, "--data", url, "--output", str(tmp_path / "run"), *ID_RUN.split())
    finally:
        server.shutdown()

    assert status == 4  # the lost shard is more than --max-lost-fraction
    warnings = [r.getMessage() for r in caplog.records if r.name == "trainer.shard_reader"]
    assert any(
        f"shard {url}/train/train-000001.tar could not be opened (HTTP Error 404" in w for w in warnings
    ), warnings
