"""Optional libraries: a component whose libraries are not installed is still listed, marked with
the extra that brings them, and a run of it is refused in one line naming that extra."""

from __future__ import annotations

import json

import pytest

from peftbench.components import plugins
from peftbench.run import spec
from peftbench.errors import ConfigError
from peftbench.components.installed import install_hint, is_installed, require_installed

ADAPTERS_MISSING = pytest.mark.skipif(is_installed("adapters"), reason="AdapterHub's extra is installed here")


def test_the_hint_names_the_extra_that_brings_a_library():
    assert install_hint(["adapters"]) == "pip install 'peftbench[adapters]'"
    assert install_hint(["submitit"]) == "pip install 'peftbench[slurm]'"  # the user-facing extra, not `test`
    assert install_hint(["adapters", "no-such-library"]) == \
        "pip install 'peftbench[adapters]' and pip install no-such-library"


def test_a_component_whose_library_is_missing_is_refused():
    from peftbench_plugins.methods.linear_probe import LinearProbe

    class NeedsMissing(LinearProbe):
        name = "needs-missing"
        libraries = ("no-such-library-peftbench",)

    with pytest.raises(ConfigError, match="method needs-missing needs no-such-library-peftbench, which is not "
                                          "installed -- pip install no-such-library-peftbench"):
        require_installed(NeedsMissing(), "method")
    require_installed(LinearProbe(), "method")  # its libraries are installed


@ADAPTERS_MISSING
@pytest.mark.parametrize("method", ["adapter", "adapters-lora", "tapt+adapter", "mtl-ngram-adapter"])
def test_adapterhub_methods_without_the_extra_exit_in_one_line(method, cli):
    result = cli("run", "--method", method, "--task", "livedoor-news", "--dry-run")
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs adapters, which is not installed" in lines[0]
    assert "pip install 'peftbench[adapters]'" in lines[0] and "Traceback" not in result.stderr


@ADAPTERS_MISSING
def test_adapterhub_methods_are_listed_as_needing_the_extra(cli):
    listing = json.loads(cli("list", "--json").stdout)
    needs = {m["name"]: m["needs"] for m in listing["methods"]}
    adapterhub = [n for n in needs if n == "adapter" or n.startswith("adapters-") or n.endswith("-adapter")]
    assert len(adapterhub) >= 20
    assert {needs[n] for n in adapterhub} == {"pip install 'peftbench[adapters]'"}
    assert needs["lora"] is None and needs["full"] is None
    with pytest.raises(ConfigError, match=r"peftbench\[adapters\]"):
        spec.resolve(plugins.load(), "adapter", "livedoor-news")
