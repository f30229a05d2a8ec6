"""The template on disk: when an edit has settled."""

from __future__ import annotations

import os
import time
from pathlib import Path

from evolve_ai.services.template import settled
from evolve_ai.testing import write_template


def test_a_template_settles_once_nothing_changed_for_a_while(tmp_path: Path) -> None:
    template = write_template(tmp_path / "tpl")
    now = time.time()
    assert not settled(template, 1.0, now)  # just written
    assert settled(template, 1.0, now + 5)
    module = template / "src" / "agent" / "alpha.py"
    module.write_text(module.read_text() + "# more\n")  # an edit...
    assert not settled(template, 1.0, now + 0.5)
    assert settled(template, 1.0, time.time() + 1.5)
    (template / "src" / "agent" / "beta.py").unlink()  # ...a deletion shows in its directory
    os.utime(template / "src" / "agent" / "alpha.py", (now - 100, now - 100))
    assert not settled(template, 1.0, time.time())
