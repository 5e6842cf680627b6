from pfs import Client


def test_quickstart_roundtrip(client: Client) -> None:
    client.put_file("a.txt", b"hello\n")
    c = client.commit("master", "first")
    assert client.get_file("a.txt", commit=c.id) == b"hello\n"
    client.create_branch("exp", c.id)
    assert {b.name for b in client.branches()} == {"master", "exp"}
