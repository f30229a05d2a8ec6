from __future__ import annotations

import os
import subprocess
import sys

from evolve_ai.services.protocol import MAX_LINE, LineReader, encode


def pipe() -> tuple[int, int]:
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return read, write


def test_messages_split_across_reads() -> None:
    read, write = pipe()
    reader = LineReader(read)
    os.write(write, b'{"type": "hello", "genome_hash": "x"}\n{"type": "ans')
    assert reader.read() == [{"type": "hello", "genome_hash": "x"}]
    os.write(write, b'wer", "id": "1", "value": 3}\n')
    assert reader.read() == [{"type": "answer", "id": "1", "value": 3}]
    os.close(write)
    assert reader.read() == []
    assert reader.eof
    os.close(read)


def test_garbage_is_counted_and_ignored() -> None:
    read, write = pipe()
    reader = LineReader(read)
    os.write(write, b'not json\n[1, 2]\n{"no": "type"}\n\n{"type": "x"}\n' + b"[" * 60000 + b"\n")
    assert reader.read() == [{"type": "x"}]
    assert reader.malformed == 4
    os.close(write)
    os.close(read)


def test_a_gigabyte_line_never_sits_in_memory() -> None:
    """An agent writing 1 GB without a newline: read and dropped, memory bounded."""
    read, write = pipe()
    os.set_blocking(write, True)
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys\nchunk = b'x' * (1 << 20)\n"
         "for _ in range(1024): os.write(1, chunk)\n"
         "os.write(1, b'\\n{\"type\": \"hello\"}\\n')\n"],
        stdout=write)
    os.close(write)
    reader = LineReader(read)
    messages = []
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(read, selectors.EVENT_READ)
    biggest = 0
    while not reader.eof:
        selector.select(5)
        messages += reader.read()
        biggest = max(biggest, len(reader._buffer))
    writer.wait(timeout=60)
    assert messages == [{"type": "hello"}]
    assert reader.malformed == 1
    assert biggest <= MAX_LINE + 65536
    os.close(read)


def test_encode_is_one_line() -> None:
    assert encode({"type": "task", "id": "a\nb", "data": [1]}) == \
        b'{"type":"task","id":"a\\nb","data":[1]}\n'
