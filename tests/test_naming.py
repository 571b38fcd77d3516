"""Folder names for tables: a plain name is its own folder; anything else is encoded, never a path."""

from hypothesis import given, strategies as st

from sparsesync.naming import is_plain_folder, table_folder


def test_plain_names_are_their_own_folder():
    for name in ["orders", "a.b", "Order_Items-2", "$x"]:
        assert table_folder(name) == name


def test_unsafe_names_are_encoded_into_one_segment():
    assert table_folder("../x") == "%%2E%2E%2Fx"
    for name in ["..", ".", "a/b", "a\\b", "100%", "-x", "", "x" * 300, "名前", "a b", "a\nb"]:
        folder = table_folder(name)
        assert folder.startswith("%") and "/" not in folder and "\\" not in folder
        assert folder not in (".", "..") and len(folder) <= 1000


@given(st.text(max_size=70), st.text(max_size=70))
def test_folders_are_one_segment_and_never_collide(a, b):
    fa, fb = table_folder(a), table_folder(b)
    assert "/" not in fa and fa not in ("", ".", "..")
    assert (fa == fb) == (a == b)
    assert is_plain_folder(fa) == is_plain_folder(a)
