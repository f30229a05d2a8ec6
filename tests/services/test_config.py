from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from evolve_ai.errors import ConfigError
from evolve_ai.services import config


def test_default_file_lists_every_key_and_reads_back_as_defaults(tmp_path: Path) -> None:
    text = config.render_default()
    for key in ("population", "size", "interval", "workers", "chunk_size", "max_running",
                "max_restarts", "backoff_initial", "backoff_max", "stop_timeout", "memory_mb",
                "cpu_seconds", "strategy", "every", "environment", "hooks"):
        assert f"\n{key} = " in text or f"[{key}]" in text, key
    assert text.count("\n# ") >= 15  # every key is commented
    path = tmp_path / "evolve.toml"
    path.write_text(text)
    assert config.load(path) == config.Config()


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert config.load(tmp_path / "absent.toml") == config.Config()


def test_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "evolve.toml"
    (tmp_path / "values_pkg").mkdir()  # a plug-in beside the file: importable from there
    (tmp_path / "values_pkg" / "__init__.py").write_text("")
    (tmp_path / "values_pkg" / "mod.py").write_text("def hook(event):\n    pass\n")
    path.write_text('hooks = ["values_pkg.mod:hook"]\n[lifecycle]\ninterval = 2\n'
                    '[selection]\nstrategy = "tournament"\n')
    loaded = config.load(path)
    assert loaded.lifecycle.interval == 2.0
    assert isinstance(loaded.lifecycle.interval, float)
    assert loaded.hooks == ("values_pkg.mod:hook",)
    assert loaded.selection.strategy == "tournament"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[lifecycle]\nintervall = 1\n", "unknown key 'lifecycle.intervall'"),
        ("colour = 1\n", "unknown key 'colour'"),
        ("[lifecycle]\ninterval = 'fast'\n", "lifecycle.interval must be a number"),
        ("[lifecycle]\nworkers = 1.5\n", "lifecycle.workers must be an integer"),
        ("[lifecycle]\nworkers = true\n", "lifecycle.workers must be an integer"),
        ("[population]\nsize = 0\n", "population.size must be > 0"),
        ("[lifecycle]\ninterval = -1\n", "lifecycle.interval must be >= 0"),
        ("[lifecycle]\ninterval = nan\n", "lifecycle.interval must be a number"),
        ("hooks = 'a:b'\n", "hooks must be a list of strings"),
        ("hooks = ['not a name']\n", "hooks has 'not a name'"),
        ("[selection]\nstrategy = 'trunction'\n", "selection.strategy must be one of"),
        ("environment = 'bad name!'\n", "environment must be a name"),
        ("population = 3\n", "[population] must be a table"),
        ("[supervisor]\nbackoff_initial = 10\nbackoff_max = 1\n", "backoff_max must be >="),
        ("[lifecycle\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "evolve.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_are_checked_like_the_file() -> None:
    base = config.Config()
    assert base.with_overrides({"lifecycle.interval": 0.5}, "--interval").lifecycle.interval == 0.5
    with pytest.raises(ConfigError, match=r"--workers: lifecycle\.workers must be >= 0"):
        base.with_overrides({"lifecycle.workers": -2}, "--workers")


def test_workers_zero_means_cpu_count() -> None:
    assert config.Config().workers >= 1
    custom = config.from_plain({"lifecycle": {"workers": 3}}, "x")
    assert custom.workers == 3


def test_rendered_default_is_plain_toml() -> None:
    parsed = tomlkit.parse(config.render_default()).unwrap()
    assert parsed["selection"]["strategy"] == "truncation"
    assert parsed["selection"]["every"] == 8
    assert parsed["evaluation"]["tasks_per_pass"] == 16


@pytest.mark.parametrize(("text", "key"), [
    ('environment = "no_such_module_here:make"\n', "environment"),
    ('hooks = ["json:no_such_function"]\n', "hooks[0]"),
    ('[selection]\nstrategy = "no_such_strategy_module:pick"\n', "selection.strategy"),
])
def test_a_plugin_that_does_not_import_is_refused(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "evolve.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key} ") and "cannot be loaded" in message
    assert str(tmp_path) in message.split("imported from")[1]  # where it was looked for
