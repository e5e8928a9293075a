"""List files and directories -> VideoRecord."""

import os

import pytest

from videomae.data.lists import ListSyntaxError, VideoRecord, load_records, read_list, scan_directory


def write(path, text):
    path.write_text(text)
    return path


def test_video_list_with_root_prefix(tmp_path):
    f = write(tmp_path / "train.csv", "a/x.mp4 3\n\nb/y z.mp4 0\n# comment\n")
    recs = read_list(f, root="/data/k400")
    assert recs == [VideoRecord("/data/k400/a/x.mp4", 3), VideoRecord("/data/k400/b/y z.mp4", 0)]
    assert not recs[0].is_frame_folder


def test_relative_paths_resolve_against_list_folder_without_root(tmp_path):
    f = write(tmp_path / "val.txt", "videos/v.mp4 7\n")
    assert read_list(f) == [VideoRecord(os.path.join(tmp_path, "videos/v.mp4"), 7)]


def test_absolute_paths_ignore_root(tmp_path):
    f = write(tmp_path / "l.txt", "/abs/v.mp4 1\n")
    assert read_list(f, root="/elsewhere")[0].path == "/abs/v.mp4"


def test_v2_list_video_and_frame_folder(tmp_path):
    f = write(tmp_path / "v2.txt", "clips/a.mp4 0 -1\nframes/b 1 120\n")
    recs = read_list(f, root="/r")
    assert recs[0] == VideoRecord("/r/clips/a.mp4", -1, 0, None)
    assert recs[1] == VideoRecord("/r/frames/b", -1, 1, 120)
    assert recs[1].is_frame_folder


def test_rawframes_v1_list(tmp_path):
    f = write(tmp_path / "ssv2.txt", "frames/12 48 5\n")
    assert read_list(f, root="/r", fmt="rawframes") == [VideoRecord("/r/frames/12", 5, 1, 48)]


@pytest.mark.parametrize(
    "text, fmt, bad_line",
    [
        ("a.mp4 1\nb.mp4\n", "video", 2),  # missing label
        ("a.mp4 1\nb.mp4 cat\n", "video", 2),  # label not an int
        ("a.mp4 0 -1\n\nb.mp4 0 x\n", "v2", 3),  # blank line still counted
        ("a 0 -1\nb -3 10\n", "v2", 2),  # negative start
        ("f 10 1\nf 1\n", "rawframes", 2),
    ],
)
def test_syntax_error_names_file_and_line(tmp_path, text, fmt, bad_line):
    f = write(tmp_path / "bad.txt", text)
    with pytest.raises(ListSyntaxError, match=f"bad.txt:{bad_line}:"):
        read_list(f, fmt=fmt)


def test_auto_detects_from_first_line_then_holds(tmp_path):
    f = write(tmp_path / "mixed.txt", "a.mp4 0 -1\nb.mp4 3\n")  # second line is not V2
    with pytest.raises(ListSyntaxError, match="mixed.txt:2: expected 'path start total'"):
        read_list(f)


def test_empty_list_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no samples"):
        read_list(write(tmp_path / "e.txt", "\n# nothing\n"))


def test_unknown_format_rejected(tmp_path):
    with pytest.raises(ValueError, match="fmt must be one of"):
        read_list(write(tmp_path / "l.txt", "a 1\n"), fmt="csv")


def test_directory_scan_recursive_sorted_unlabeled(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("sub/b.MP4", "a.webm", "notes.txt", "c.avi"):
        (tmp_path / name).write_bytes(b"x")
    recs = scan_directory(tmp_path)
    assert [os.path.relpath(r.path, tmp_path) for r in recs] == ["a.webm", "c.avi", "sub/b.MP4"]
    assert all(r.label == -1 for r in recs)


def test_load_records_dispatch_and_errors(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    assert len(load_records(tmp_path)) == 1
    assert len(load_records(write(tmp_path / "l.txt", "v.mp4 2\n"))) == 1
    with pytest.raises(FileNotFoundError, match="neither a list file nor a directory"):
        load_records(tmp_path / "nope.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no video files"):
        load_records(empty)
