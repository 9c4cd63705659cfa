"""The libvirt hook on real files: a stale layer is refused however its path is spelt, only
the disks' own sources count, and a layer map of any wrong shape refuses with one line."""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import libvirt_hook


class Pool:
    """A pool directory with a volume's old image (stale) and its active overlay, the map the
    agent would write for them, and another way in: a symlink to the pool directory."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "pool"
        self.dir.mkdir()
        self.stale = self.dir / "vol"
        self.active = self.dir / "vol.hostsnap-a"
        self.stale.write_text("old")
        self.active.write_text("new")
        self.link = root / "mnt"
        self.link.symlink_to(self.dir)
        self.layers = root / "layers.json"
        self.write_map(
            {str(self.stale): {"domain": "vm", "target": "vda", "active": str(self.active)}}
        )

    def write_map(self, content: Any) -> None:
        self.layers.write_text(json.dumps(content))


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path)


def domain(*sources: str, backing: str = "", network: bool = False) -> str:
    disks = "".join(
        f"<disk type='file'><source file='{s}'/>{backing}<target dev='vd{chr(97 + i)}'/></disk>"
        for i, s in enumerate(sources)
    )
    if network:
        disks += (
            "<disk type='network'><source protocol='rbd' name='rbd/img'/><target dev='vdz'/></disk>"
        )
    return f"<domain><name>vm</name><devices>{disks}</devices></domain>"


def hook(layers: Path, xml: str) -> tuple[int, list[str]]:
    err = io.StringIO()
    code = libvirt_hook.main(
        ["--layers", str(layers), "vm", "prepare", "begin", "-"], io.StringIO(xml), err
    )
    return code, err.getvalue().splitlines()


SPELLINGS: dict[str, Callable[[Pool], str]] = {
    "as recorded": lambda p: str(p.stale),
    "through a symlinked directory": lambda p: str(p.link / "vol"),
    "with a doubled slash": lambda p: str(p.stale).replace("/pool/", "/pool//"),
    "with /./": lambda p: str(p.stale).replace("/pool/", "/pool/./"),
    "through ..": lambda p: str(p.dir / ".." / "pool" / "vol"),
    "as a symlink to the file": lambda p: _symlink(p.dir / "alias", p.stale),
    "as a hard link": lambda p: _hardlink(p.dir / "vol.copy", p.stale),
}


def _symlink(path: Path, target: Path) -> str:
    path.symlink_to(target)
    return str(path)


def _hardlink(path: Path, target: Path) -> str:
    os.link(target, path)
    return str(path)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_stale_layer_is_refused_however_its_path_is_spelt(pool: Pool, spelling: str):
    path = SPELLINGS[spelling](pool)
    code, lines = hook(pool.layers, domain(str(pool.active), path))
    assert code == 1
    (line,) = lines
    assert line.startswith(f"hostsnap: refusing to start vm: disk vdb points at {path}")
    assert f"the active image is {pool.active}" in line
    if path != str(pool.stale):
        assert f"(the same file as {pool.stale})" in line


def test_a_stale_layer_that_no_longer_exists_is_found_by_its_real_path(pool: Pool):
    pool.stale.unlink()
    code, lines = hook(pool.layers, domain(str(pool.link / "." / "vol")))
    assert code == 1 and f"(the same file as {pool.stale})" in lines[0]


@pytest.mark.parametrize(
    "path",
    [
        lambda p: str(p.active),
        lambda p: str(p.link / "vol.hostsnap-a"),
        lambda p: str(p.dir / "other"),
        lambda p: str(p.link / "missing"),
    ],
    ids=[
        "the active image",
        "the active image through the symlink",
        "another file",
        "a file nowhere",
    ],
)
def test_a_disk_that_is_not_a_stale_layer_starts(pool: Pool, path: Callable[[Pool], str]):
    (pool.dir / "other").write_text("x")
    assert hook(pool.layers, domain(path(pool))) == (0, [])


def test_a_copy_of_a_stale_layer_is_another_file_and_starts(pool: Pool):
    copy = pool.dir / "vol.copy"
    copy.write_bytes(pool.stale.read_bytes())
    assert hook(pool.layers, domain(str(copy))) == (0, [])


def test_the_layers_below_an_active_image_in_backing_store_are_not_refused(pool: Pool):
    backing = (
        f"<backingStore type='file'><format type='qcow2'/><source file='{pool.stale}'/>"
        "</backingStore>"
    )
    assert hook(pool.layers, domain(str(pool.active), backing=backing)) == (0, [])


def test_every_disk_with_a_stale_layer_gets_its_own_line(pool: Pool):
    second_stale = pool.dir / "data"
    second_active = pool.dir / "data.hostsnap-b"
    second_stale.write_text("")
    second_active.write_text("")
    pool.write_map(
        {
            str(pool.stale): {"active": str(pool.active)},
            str(second_stale): {"active": str(second_active)},
        }
    )
    code, lines = hook(pool.layers, domain(str(pool.link / "vol"), str(pool.link / "data")))
    assert code == 1
    assert [line.split(" points at ")[0][-3:] for line in lines] == ["vda", "vdb"]
    assert f"the active image is {second_active}" in lines[1]


def test_a_record_whose_active_image_is_gone_blocks_nothing(pool: Pool):
    pool.active.unlink()
    assert hook(pool.layers, domain(str(pool.link / "vol"))) == (0, [])


def test_no_map_means_no_stale_layer(pool: Pool):
    pool.layers.unlink()
    assert hook(pool.layers, domain(str(pool.stale))) == (0, [])


WRONG_SHAPES: list[Any] = [
    [],
    [{"/p/v": {"active": "/p/w"}}],
    "layers",
    42,
    1.5,
    None,
    True,
    {"/p/v": "/p/w"},
    {"/p/v": ["/p/w"]},
    {"/p/v": None},
    {"/p/v": 7},
    {"/p/v": {}},
    {"/p/v": {"active": None}},
    {"/p/v": {"active": 3}},
    {"/p/v": {"active": ["/p/w"]}},
    {"/p/v": {"active": {"path": "/p/w"}}},
    {"/p/v": {"active": ""}},
    {"/p/v": {"active": "relative/w"}},
    {"/p/v": {"active": "/p/w\u0000x"}},
    {"/p/v": {"active": "/p/\ud800"}},
    {"": {"active": "/p/w"}},
    {"relative": {"active": "/p/w"}},
    {"/p/v\u0000": {"active": "/p/w"}},
    {"/p/ok": {"active": "/p/w"}, "/p/v": {"target": "vda"}},
]
NOT_JSON = ["", "{", "{'/p/v': 1}", "[" * 100_000, "NaN garbage", '{"a": 1} trailing']


@pytest.mark.parametrize("content", WRONG_SHAPES, ids=[repr(c)[:40] for c in WRONG_SHAPES])
def test_a_map_of_the_wrong_shape_refuses_with_one_line(pool: Pool, content: Any):
    pool.write_map(content)
    assert_refused_in_one_line(pool)


@pytest.mark.parametrize("text", NOT_JSON, ids=[t[:20] for t in NOT_JSON])
def test_a_map_that_is_not_json_refuses_with_one_line(pool: Pool, text: str):
    pool.layers.write_text(text)
    assert_refused_in_one_line(pool)


def test_a_map_that_is_not_text_or_not_a_file_refuses_with_one_line(pool: Pool):
    pool.layers.write_bytes(b'{"/p/v": {"active": "\xff\xfe"}}')
    assert_refused_in_one_line(pool)
    pool.layers.unlink()
    pool.layers.mkdir()
    assert_refused_in_one_line(pool)


def assert_refused_in_one_line(pool: Pool) -> None:
    code, lines = hook(pool.layers, domain(str(pool.active)))
    assert code == 1
    (line,) = lines
    assert line.startswith(f"hostsnap: refusing to start vm: the stale-layer map {pool.layers}")
    assert line.endswith("restarting hostsnap-agent writes it anew from its journal")


def test_a_corrupt_map_does_not_hold_back_a_domain_without_file_disks(pool: Pool):
    pool.layers.write_text("[]")
    assert hook(pool.layers, domain(network=True)) == (0, [])


def test_a_domain_xml_that_does_not_parse_refuses_with_one_line(pool: Pool):
    code, lines = hook(pool.layers, "<domain><devices>")
    assert code == 1 and len(lines) == 1 and lines[0].startswith("hostsnap: refusing to start vm")


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["null", "bool", "int", "float", "str", "path", "list", "dict", "entry"]
    kind = rng.choice(kinds if depth < 4 else kinds[:6])
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(2**70), 2**70)
    if kind == "float":
        return rng.uniform(-1e9, 1e9)
    if kind == "str":
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 8)))
    if kind == "path":
        return rng.choice(["/", "/p/v", "/p/w", "p/v", "", "/p/v\u0000", "//p/./v"])
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        return {
            str(random_json(rng, 4)): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))
        }
    return {"active": random_json(rng, depth + 1), "domain": "vm", "target": "vda"}


def test_no_map_content_ever_makes_a_traceback(pool: Pool):
    rng = random.Random(15)
    for _ in range(500):
        content = random_json(rng)
        if rng.random() < 0.5:
            content = {random_json(rng, 4) if rng.random() < 0.3 else "/p/v": content}
        text = json.dumps(content, default=str) if rng.random() < 0.9 else json.dumps(content)[:-1]
        pool.layers.write_text(text)
        code, lines = hook(pool.layers, domain(str(pool.active), "/p/v"))
        assert code in (0, 1), text
        assert len(lines) <= 2 and all(line.startswith("hostsnap: ") for line in lines), text
