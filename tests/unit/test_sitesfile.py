"""`reconciler sites add|list` helpers: comments and layout survive, bad edits change nothing."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from reconciler.cli.sitesfile import add_site, list_rows
from reconciler.core.config.sites import parse
from reconciler.core.errors import ConfigError, ReconcilerError, SitesFileError
from reconciler.sync.config_file import load

ROOT_SITES = Path(__file__).resolve().parents[2] / "sites.toml"

EXAMPLE = """\
# Our sites. Keep this comment.

[defaults]
namespace = "web"   # where they live
image = "gcr.io/p/{repo}:{sha}"

[sites.blog]  # the blog
repo = "acme/blog"
# paused = true   (commented-out key of blog)

[sites.shop]
repo = "acme/shop"
branch = "release"
# a note right under shop's keys

# About the service: this block belongs to [service].
[service]
schedule = "*/5 * * * *"
"""


@pytest.fixture
def sites_toml(tmp_path: Path) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(EXAMPLE)
    return path


def _without(text: str, block: str) -> str:
    assert text.count(block) == 1
    return text.replace(block, "", 1)


def test_add_keeps_every_line_and_comment_and_the_result_validates(sites_toml: Path) -> None:
    added = add_site(sites_toml, "docs", {"repo": "acme/docs", "branch": "main", "paused": True})

    assert added == '[sites.docs]\nrepo = "acme/docs"\nbranch = "main"\npaused = true'
    text = sites_toml.read_text()
    # Exactly the new table (and the blank line before it) was inserted, nothing else moved.
    assert _without(text, "\n" + added + "\n") == EXAMPLE
    # It sits after the last site (and that site's own trailing comment), before [service]'s
    # comment block.
    assert text.index("# a note right under shop's keys") < text.index("[sites.docs]")
    assert text.index("[sites.docs]") < text.index("# About the service")
    config = parse(text, str(sites_toml))
    assert config.names == ("blog", "shop", "docs")
    docs = config.select(["docs"])[0]
    assert (docs.repo, docs.branch, docs.paused, docs.namespace) == (
        "acme/docs",
        "main",
        True,
        "web",
    )
    assert config.service.schedule == "*/5 * * * *"


def test_add_at_the_end_when_sites_come_last(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    original = '[defaults]\nimage = "r/{repo}:{sha}"\n\n[sites.a]\nrepo = "o/a"\n# trailing\n'
    path.write_text(original)
    add_site(path, "b", {"repo": "o/b"})
    assert path.read_text() == original + '\n[sites.b]\nrepo = "o/b"\n'


def test_add_to_a_file_without_trailing_newline_or_sites(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text('[defaults]\nimage = "r/{repo}:{sha}"')  # no site yet, no final newline
    add_site(path, "first", {"repo": "o/first"})
    assert (
        path.read_text()
        == '[defaults]\nimage = "r/{repo}:{sha}"\n\n[sites.first]\nrepo = "o/first"\n'
    )
    assert load(path).names == ("first",)


def test_add_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    add_site(path, "blog", {"repo": "acme/blog", "image": "r/blog:{short_sha}"})
    assert path.read_text() == '[sites.blog]\nrepo = "acme/blog"\nimage = "r/blog:{short_sha}"\n'
    assert load(path).names == ("blog",)


def test_names_and_values_are_quoted_and_escaped(sites_toml: Path) -> None:
    add_site(
        sites_toml,
        "docs.v2",
        {"repo": "acme/docs", "deployment": "docs-v2", "branch": 'feat/"q"'},
    )
    text = sites_toml.read_text()
    assert '[sites."docs.v2"]' in text
    site = tomllib.loads(text)["sites"]["docs.v2"]
    assert site["branch"] == 'feat/"q"'
    # A second add finds the quoted name as a duplicate.
    with pytest.raises(SitesFileError, match="already exists"):
        add_site(sites_toml, "docs.v2", {"repo": "acme/docs2"})


def test_crlf_files_stay_crlf(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    original = EXAMPLE.replace("\n", "\r\n").encode()
    path.write_bytes(original)
    add_site(path, "docs", {"repo": "acme/docs"})
    data = path.read_bytes()
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert data.replace(b'\r\n[sites.docs]\r\nrepo = "acme/docs"\r\n', b"", 1) == original


def test_file_mode_is_kept_and_symlinks_are_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text(EXAMPLE)
    real.chmod(0o640)
    link = tmp_path / "sites.toml"
    link.symlink_to(real)
    add_site(link, "docs", {"repo": "acme/docs"})
    assert link.is_symlink()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert "[sites.docs]" in real.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.toml", "sites.toml"]  # no temp


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("blog", {"repo": "acme/other"}, 'site "blog": already exists'),
        ("shop", {"repo": "acme/shop"}, 'sites.toml:11: site "shop": already exists'),
        ("docs", {"repo": "not a repo"}, '"repo" must look like "owner/name"'),
        ("docs", {"repo": "acme/docs", "colour": "red"}, 'unknown key "colour"'),
        ("docs", {"repo": "acme/docs", "image": "r/docs:latest"}, "must contain {sha}"),
        ("docs", {"repo": "acme/docs", "verify": "maybe"}, '"verify" must be one of'),
        ("bad name!", {"repo": "acme/docs"}, "site names use letters"),
        ("blog2", {"repo": "acme/blog"}, 'targets web/blog like site "blog"'),
        ("docs", {"branch": "main"}, 'missing required key "repo"'),
    ],
)
def test_refused_adds_leave_the_file_byte_identical(
    sites_toml: Path, name: str, fields: dict[str, str | bool], message: str
) -> None:
    if name == "blog2":
        fields = {**fields, "deployment": "blog"}
    before = sites_toml.read_bytes()
    with pytest.raises(SitesFileError) as info:
        add_site(sites_toml, name, fields)
    assert message in str(info.value)
    assert f'not adding site "{name}" ({sites_toml} left unchanged)' in str(info.value)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ReconcilerError)
    assert info.value.problems
    assert sites_toml.read_bytes() == before
    assert [p.name for p in sites_toml.parent.iterdir()] == ["sites.toml"]


def test_a_broken_file_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_bytes(b'[sites.blog]\nrepo = "acme/blog\n')
    with pytest.raises(
        SitesFileError, match=r"fix the file first[\s\S]*sites.toml:2: invalid TOML"
    ):
        add_site(path, "docs", {"repo": "acme/docs"})
    assert path.read_bytes() == b'[sites.blog]\nrepo = "acme/blog\n'


def test_a_failed_write_leaves_the_file_and_no_temp_file(
    sites_toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("reconciler.cli.sitesfile.os.replace", fail)
    with pytest.raises(SitesFileError, match="cannot write: No space left on device"):
        add_site(sites_toml, "docs", {"repo": "acme/docs"})
    assert sites_toml.read_text() == EXAMPLE
    assert [p.name for p in sites_toml.parent.iterdir()] == ["sites.toml"]


def test_the_root_sites_toml_is_a_valid_complete_example() -> None:
    config = load(ROOT_SITES)
    assert len(config.sites) >= 2
    assert (config.service.schedule, config.service.jitter, config.service.timezone) == (
        "0 * * * *",
        60,
        "UTC",
    )
    data = tomllib.loads(ROOT_SITES.read_text())
    assert {"namespace", "image"} <= set(data["defaults"])
    assert any(s.paused for s in config.sites)
    assert any(s.container for s in config.sites)
    assert any(s.branch for s in config.sites)
    assert {s.verify for s in config.sites} >= {"registry", "checks"}


def test_the_root_sites_toml_takes_an_added_site(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    original = ROOT_SITES.read_text()
    path.write_text(original)
    added = add_site(path, "wiki", {"repo": "acme/wiki", "namespace": "docs"})
    assert _without(path.read_text(), "\n" + added + "\n") == original
    assert load(path).names[-1] == "wiki"


def test_list_rows_show_effective_settings() -> None:
    rows = list_rows(load(ROOT_SITES))
    assert [r["name"] for r in rows] == ["blog", "shop", "docs"]
    assert list(rows[0]) == [
        "name",
        "repo",
        "branch",
        "namespace",
        "deployment",
        "container",
        "image",
        "verify",
        "pin_digest",
        "required_checks",
        "paused",
    ]
    blog, shop, docs = rows
    assert blog == {
        "name": "blog",
        "repo": "acme/blog",
        "branch": "(default)",
        "namespace": "web",
        "deployment": "blog",
        "container": "(only container)",
        "image": "gcr.io/my-project/{repo}:{sha}",
        "verify": "registry",
        "pin_digest": "true",
        "required_checks": "-",
        "paused": "false",
    }
    assert (shop["branch"], shop["deployment"], shop["container"], shop["verify"]) == (
        "release",
        "storefront",
        "web",
        "checks",
    )
    assert (docs["namespace"], docs["paused"]) == ("docs", "true")
    assert all(isinstance(v, str) for row in rows for v in row.values())


def test_no_temp_files_are_left_after_success(sites_toml: Path) -> None:
    add_site(sites_toml, "docs", {"repo": "acme/docs"})
    assert [p.name for p in sites_toml.parent.iterdir()] == ["sites.toml"]
    assert os.access(sites_toml, os.R_OK)
