"""The metrics' HTTP server: one exposition per pass, in the format asked for."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from evolve_ai.services.metrics import Metrics
from tests.helpers import free_port


def scrape(port: int, accept: str = "") -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers["content-type"], answer.read().decode()


def test_values_change_at_the_pass_not_in_the_middle_of_it() -> None:
    metrics = Metrics()
    port = free_port()
    metrics.serve("127.0.0.1", port)
    metrics.generation.set(3)
    metrics.published()
    assert "evolve_generation 3.0" in scrape(port)[1]
    metrics.generation.set(4)  # a pass under way: scrapes still see the last one whole
    assert "evolve_generation 3.0" in scrape(port)[1]
    metrics.published()
    assert "evolve_generation 4.0" in scrape(port)[1]
    kind, text = scrape(port, "application/openmetrics-text; version=1.0.0")
    assert kind.startswith("application/openmetrics-text") and text.endswith("# EOF\n")
    assert scrape(port)[0].startswith("text/plain")  # each format cached apart
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert missing.value.code == 404
