"""hostsnap is Apache-2.0, as CloudStack: the text at the top of the tree and the licence every
kind of metadata names."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEBIAN_TEXT = Path("/usr/share/common-licenses/Apache-2.0")


def test_the_tree_carries_the_full_apache_2_text():
    text = (REPO / "LICENSE").read_text()

    assert text == DEBIAN_TEXT.read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text


def test_pyproject_debian_copyright_and_the_spec_name_apache_2():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    copyright_ = (REPO / "packaging" / "debian" / "copyright").read_text()
    spec = (REPO / "packaging" / "rpm" / "hostsnap.spec").read_text()

    assert project["license"] == {"text": "Apache-2.0"}
    # DEP-5: the files paragraph names the licence, a stand-alone paragraph gives its text.
    assert re.search(r"^Files: \*\nCopyright: .+\nLicense: Apache-2\.0$", copyright_, re.M)
    assert re.search(r"^License: Apache-2\.0\n Licensed under the Apache License", copyright_, re.M)
    assert "/usr/share/common-licenses/Apache-2.0" in copyright_
    assert re.search(r"^License:\s+Apache-2\.0$", spec, re.M)
    assert re.search(r"^%license LICENSE$", spec, re.M)
