"""Tests for pseudovideo.pictures: grids, video grids, GIFs, labelled rows, curve plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pseudovideo.pictures import (
    frame_labels,
    plot_csv_curves,
    plot_curves,
    save_image_grid,
    save_images,
    save_labelled_grid,
    save_loss_curves,
    save_side_by_side,
    save_video_gif,
    save_video_grid,
    to_uint8,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAD = 2  # the grids' padding


def hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> the uint8 (H, W, 3) pixels a grid should hold."""
    pixels = to_uint8(image).expand(3, -1, -1)  # (3, H, W)
    return pixels.permute(1, 2, 0).numpy()


def test_to_uint8_quantisation_by_hand():
    values = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    # (x + 1) * 127.5 rounded half-to-even and clamped: 63.75 -> 64, 127.5 -> 128, 191.25 -> 191
    assert to_uint8(values).tolist() == [0, 0, 64, 128, 191, 255, 255]


def test_image_grid_size_and_tiles(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(5, 3, 6, 7) * 2 - 1  # (N, C, H, W)
    path = save_image_grid(images, tmp_path / "new" / "deeper" / "grid.png", nrow=3, upscale=2)
    assert path.exists() and path.read_bytes()[:8] == PNG_SIGNATURE
    grid = np.array(Image.open(path))
    # 3 columns x 2 rows of (12 x 14) tiles with 2-pixel borders
    assert grid.shape == (2 * (12 + PAD) + PAD, 3 * (14 + PAD) + PAD, 3)
    tile4 = grid[PAD + 14 : PAD + 14 + 12, PAD + 16 : PAD + 16 + 14]  # row 1, column 1 -> image 4
    expected = hwc(images[4]).repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(tile4, expected)


def test_single_image_grid_keeps_the_border(tmp_path):
    image = torch.zeros(1, 1, 4, 4)  # grey 0 -> 128
    grid = np.array(Image.open(save_image_grid(image, tmp_path / "one.png")))
    assert grid.shape == (4 + 2 * PAD, 4 + 2 * PAD, 3)
    assert (grid[PAD:-PAD, PAD:-PAD] == 128).all() and (grid[0] == 0).all()


def _png_text(path) -> dict:
    """The PNG's text chunks, JSON ones decoded."""
    with Image.open(path) as png:
        text = dict(png.text)
    json_keys = {"columns", "rows", "groups", "marked_columns", "layout", "curves"}
    return {k: (json.loads(v) if k in json_keys else v) for k, v in text.items()}


def test_video_grid_last_column_is_the_clean_frame(tmp_path):
    torch.manual_seed(1)
    b, t, h, w = 3, 4, 5, 7
    videos = torch.rand(b, t, 1, h, w) * 2 - 1  # (B, T, C, H, W), grey
    path = save_video_grid(videos, tmp_path / "videos.png")
    grid, meta = np.array(Image.open(path)), _png_text(path)
    assert meta["columns"] == ["t=0", "t=1", "t=2", "t=3\nclean"] and meta["marked_columns"] == [t - 1]
    xs, ys = meta["layout"]["column_x"], meta["layout"]["row_y"]
    assert meta["layout"]["tile"] == [h, w] and len(xs) == t and len(ys) == b
    for i in range(b):
        assert np.array_equal(grid[ys[i] : ys[i] + h, xs[-1] : xs[-1] + w], hwc(videos[i, -1]))
    assert np.array_equal(grid[ys[0] : ys[0] + h, xs[0] : xs[0] + w], hwc(videos[0, 0]))  # top-left: video 0, frame 0
    assert ys[0] > 0  # the labels sit above the first row


def test_labelled_grid_names_every_column_and_marks_the_clean_frame(tmp_path):
    """Column labels (index and levels), groups with a gap, row labels and the clean-frame outline, by metadata
    and size; each column is at least as wide as its tile and as its label."""
    levels = torch.tensor([[2.0, 0.2], [1.0, 0.1], [0.0, 0.0]])  # (T, K)
    labels = frame_labels(3, levels, ["blur", "noise"])
    assert labels == ["t=0\nblur 2\nnoise 0.2", "t=1\nblur 1\nnoise 0.1", "t=2\nclean"]
    assert frame_labels(2, copies=True) == ["t=0\ncopy", "t=1\nclean"]
    tiles = torch.zeros(2, 6, 3, 16, 16)  # (R, K, C, H, W): 3 input frames, then 3 reconstructed frames
    tiles[:, 2], tiles[:, 5] = 1.0, -1.0
    path = save_labelled_grid(tiles, tmp_path / "g.png", column_labels=labels * 2, row_labels=["a", "b"],
                              groups=[("input", 3), ("reconstruction", 3)], marked_columns=[2, 5], title="hello", upscale=2)
    meta = _png_text(path)
    assert meta["columns"] == labels * 2 and meta["rows"] == ["a", "b"] and meta["title"] == "hello"
    assert meta["groups"] == [["input", 3], ["reconstruction", 3]] and meta["marked_columns"] == [2, 5]
    xs, ys = meta["layout"]["column_x"], meta["layout"]["row_y"]
    assert meta["layout"]["tile"] == [32, 32] and len(ys) == 2
    assert all(b - a >= 32 + PAD for a, b in zip(xs, xs[1:]))  # no tile overlaps the next
    assert xs[3] - xs[2] >= 32 + PAD + 10  # the gap between the input and reconstruction groups
    image = np.array(Image.open(path))
    assert image.shape[0] == ys[-1] + 32 + PAD and image.shape[1] >= xs[-1] + 32 + PAD
    assert (image[ys[0] : ys[0] + 32, xs[2] : xs[2] + 32] == 255).all()  # tile (0, 2) is white
    assert (image[ys[1] : ys[1] + 32, xs[5] : xs[5] + 32] == 0).all()  # tile (1, 5) is black
    outline = image[ys[0] - 1, xs[2] + 5]  # the clean column's outline, just above its first tile
    assert outline[1] > outline[0] and outline[1] > outline[2]  # green
    assert (image[ys[0] - 1, xs[1] + 5] == 255).all()  # no outline on an unmarked column
    with pytest.raises(ValueError, match="labels"):
        save_labelled_grid(tiles, tmp_path / "bad.png", column_labels=labels)


def test_video_gif_has_t_frames_and_holds_the_last(tmp_path):
    torch.manual_seed(2)
    b, t, h, w = 2, 5, 6, 6
    videos = torch.rand(b, t, 3, h, w) * 2 - 1
    path = save_video_gif(videos, tmp_path / "anim" / "v.gif", frame_ms=120, hold_last_ms=900, upscale=3)
    gif = Image.open(path)
    assert gif.n_frames == t and gif.info.get("loop") == 0
    assert gif.size == (b * (3 * w + PAD) + PAD, 3 * h + 2 * PAD)
    durations = []
    for k in range(t):
        gif.seek(k)
        durations.append(gif.info["duration"])
    assert durations == [120] * (t - 1) + [900]
    # GIF frame 2 shows frame 2 of video 1 (right tile); GIF palettes are lossy, so compare loosely
    gif.seek(2)
    frame = np.array(gif.convert("RGB")).astype(int)
    x0 = PAD + 3 * w + PAD
    tile = frame[PAD : PAD + 3 * h, x0 : x0 + 3 * w]
    expected = hwc(videos[1, 2]).repeat(3, axis=0).repeat(3, axis=1).astype(int)
    assert np.abs(tile - expected).mean() < 12


def test_side_by_side_rows_and_labels(tmp_path):
    size = 24  # tiles taller than a line of text, so each row is exactly one strip high
    originals = torch.full((4, 3, size, size), -1.0)  # black tiles
    recon = torch.full((4, 1, size, size), 1.0)  # white tiles, grey input
    path = save_side_by_side([originals, recon], ["original", "model A"], tmp_path / "cmp.png")
    canvas = np.array(Image.open(path))
    strip_width = 4 * (size + PAD) + PAD
    assert canvas.shape[0] == 2 * (size + 2 * PAD) and canvas.shape[1] > strip_width
    label_area = canvas[:, : canvas.shape[1] - strip_width]
    assert (label_area < 128).any() and (label_area == 255).any()  # dark text on white
    right = canvas[:, canvas.shape[1] - strip_width :]
    assert (right[PAD : PAD + size, PAD : PAD + size] == 0).all()
    assert (right[-PAD - size : -PAD, -PAD - size : -PAD] == 255).all()
    assert (right[size + 2 * PAD, :] == 0).all()  # the border between the two rows
    with pytest.raises(ValueError, match="label"):
        save_side_by_side([originals], ["a", "b"], tmp_path / "bad.png")


def test_plot_curves_writes_a_png(tmp_path):
    path = plot_curves(
        {"loss": ([0, 10, 20], [1.0, 0.5, 0.25]), "val": ([0, 20], [1.2, 0.4])},
        tmp_path / "plots" / "loss.png",
        title="training",
        ylabel="loss",
        logy=True,
    )
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    assert Image.open(path).size == (640, 400)
    with pytest.raises(ValueError, match="x values"):
        plot_curves({"bad": ([0, 1], [1.0])}, tmp_path / "bad.png")


def test_plot_csv_curves(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,fid\n0,1.0,\n100,0.5,40.0\n200,0.3,\n300,0.2,30.5\n")
    path = plot_csv_curves(log, ["loss", "fid"], tmp_path / "curves.png", ylabel="value")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError) as err:
        plot_csv_curves(log, ["psnr"], tmp_path / "x.png")
    assert "psnr" in str(err.value) and "loss" in str(err.value)
    with pytest.raises(FileNotFoundError):
        plot_csv_curves(tmp_path / "missing.csv", ["loss"], tmp_path / "y.png")


def test_loss_curves_plot_the_loss_and_its_clean_frame_term(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,lr,recon,recon_clean\n10,1.0,0.1,0.9,0.8\n20,0.5,0.1,0.45,0.4\n")
    path = save_loss_curves(log, tmp_path / "loss_curves.png", title="run")
    assert _png_text(path)["curves"] == ["loss (total)", "recon_clean (clean-frame reconstruction)"]
    only_loss = save_loss_curves(log, tmp_path / "frames_as_images.png", clean_terms=())  # a task logging no such term
    assert _png_text(only_loss)["curves"] == ["loss (total)"]
    log.write_text("step,loss,lr,mse,mse_last_frame\n")
    assert save_loss_curves(log, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_shape_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        save_video_grid(torch.zeros(2, 3, 4), tmp_path / "v.png")  # 4-D is a video of signals (B, T, C, L)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        save_image_grid(torch.zeros(4, 4), tmp_path / "i.png")  # 3-D is signals (N, C, L)
    with pytest.raises(ValueError, match="upscale"):
        save_image_grid(torch.zeros(1, 3, 4, 4), tmp_path / "i.png", upscale=0)


def test_save_images_writes_one_png_per_image_at_native_size(tmp_path):
    images = torch.linspace(-1, 1, 3 * 3 * 5 * 7).reshape(3, 3, 5, 7)
    paths = save_images(images, tmp_path / "imgs")
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
    with Image.open(paths[1]) as png:
        assert png.size == (7, 5) and png.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(png), to_uint8(images[1]).permute(1, 2, 0).numpy())
    with Image.open(save_images(images[:, :1], tmp_path / "grey")[0]) as png:
        assert png.mode == "L" and png.size == (7, 5)
    with pytest.raises(ValueError, match="C in"):
        save_images(torch.zeros(1, 2, 4, 4), tmp_path / "bad")
