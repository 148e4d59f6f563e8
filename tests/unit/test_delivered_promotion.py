"""Promotion (#20) of sites delivered by Helm or a GitOps repository (#21)."""

from __future__ import annotations

import pytest

from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError

PIPELINE = """\
[defaults]
image = "registry.example/{repo}:{sha}"
verify = "none"

[sites.staging]
repo = "acme/shop"
namespace = "staging"
deployment = "shop"

[sites.prod]
repo = "acme/shop"
namespace = "prod"
deployment = "shop"
promote_from = "staging"
soak = "30m"
"""
HELM_TABLE = '\n[sites.prod.helm]\nrelease = "shop-prod"\n'
GIT_TABLE = (
    '\n[sites.prod.git]\nrepo = "acme/deploy"\nfile = "prod/kustomization.yaml"\n'
    'kustomize_image = "shop"\n'
)


@pytest.mark.parametrize(("table", "delivery"), [(HELM_TABLE, "helm"), (GIT_TABLE, "git")])
def test_a_delivered_follower_is_a_load_error_naming_file_line_and_site(
    table: str, delivery: str
) -> None:
    """Its delivery would be planned against the branch head, not what its source proved."""
    with pytest.raises(ConfigError) as caught:
        config.parse(PIPELINE + table, "sites.toml")
    (problem,) = caught.value.problems
    assert (problem.path, problem.line, problem.site) == ("sites.toml", 14, "prod")  # promote_from
    assert f'delivered by {delivery} cannot follow "staging"' in problem.message
    assert "drop promote_from" in problem.message
