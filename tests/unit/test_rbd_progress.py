from agent.hypervisor.ceph_rbd import printed_percentages


def test_a_percentage_split_over_two_reads_is_found_once_whole() -> None:
    pieces = [b"\rRolling back to snapshot", b": ", b"25", b"% complete...", b"\rRolling"]
    output = b""
    found: list[list[int]] = []
    for piece in pieces:
        output += piece
        found.append(printed_percentages(output))
    assert found[2] == [] and found[3] == [25] and found[4] == [25]


def test_every_percentage_of_one_read_is_found_in_order() -> None:
    output = b"\rR: 25% complete...\rR: 50% complete...\rR: 100% complete...done.\n"
    assert printed_percentages(output) == [25, 50, 100]
