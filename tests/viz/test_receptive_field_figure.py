import numpy as np
import pytest

from explorer.viz import receptive_field_figure, rf_table_html


def test_boxes_span_pixel_edges():
    image = np.zeros((20, 30, 3), np.uint8)
    erf = np.full((20, 30), 1 / 600)
    fig = receptive_field_figure(image, erf, rf_box=((2, 8), (3, 11)), erf_box=((4.5, 6.5), (5, 9)), centre=(5, 7))
    rf = fig.layout.shapes[0]
    assert (rf.x0, rf.x1, rf.y0, rf.y1) == (2.5, 11.5, 1.5, 8.5)  # width 9 = 11 - 3 + 1 pixels
    assert fig.layout.shapes[2].x0 == rf.x0 and fig.layout.shapes[2].xref == "x2"
    assert [t.type for t in fig.data] == ["image", "heatmap", "scatter"]
    assert list(fig.layout.yaxis.range) == [19.5, -0.5]  # image rows grow downwards


@pytest.mark.parametrize("image, erf, word", [
    (np.zeros((20, 30)), np.zeros((20, 30)), "image"),
    (np.zeros((20, 30, 3)), np.zeros((20, 31)), "erf"),
])
def test_bad_shapes(image, erf, word):
    with pytest.raises(ValueError, match=word):
        receptive_field_figure(image, erf, ((0, 1), (0, 1)), ((0, 1), (0, 1)), (0, 0))


def test_table_escapes_and_collapses_equal_dims():
    rows = [{"name": "<conv>", "op": "conv", "size": (5, 5), "stride": (1, 2), "padding": (2, 2)}]
    html = rf_table_html(rows)
    assert "&lt;conv&gt;" in html and "<conv>" not in html
    assert ">5<" in html and "1 × 2" in html


def test_photo_travels_as_a_lossless_png():
    import base64
    import io

    from PIL import Image

    from explorer.viz.receptive_field import png_data_uri

    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    fig = receptive_field_figure(image, np.full((20, 30), 1 / 600), ((2, 8), (3, 11)), ((4, 6), (5, 9)), (5, 7))
    source = fig.data[0].source
    assert source.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))
    np.testing.assert_array_equal(decoded, image)  # PNG is lossless: exactly the network's input pixels
    with pytest.raises(ValueError, match="image must be"):
        png_data_uri(np.zeros((20, 30, 3)))  # float, not uint8
