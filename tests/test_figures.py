"""The concept diagrams: each draws inside its canvas without overlapping
labels, and each is shown once in the book, where the prose refers to it,
with a caption and alternative text."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml
from book_figures import BOOK, ROOT, figures, load_diagrams, references

build, diagrams = load_diagrams()
STEMS = sorted(diagrams.DIAGRAMS)

# The module of book/diagrams that draws a chapter's figures.
MODULE = {
    "01_what_we_build": "ch01",
    "02_tokenization": "ch02",
    "03_ngrams": "ch03",
    "04_autograd": "ch04",
    "05_attention": "ch05",
    "06_gpt_model": "ch06",
    "07_training": "ch07",
    "08_generation": "ch08",
    "09_fast_generation": "ch09",
    "10_classification": "ch10",
    "11_instruction_tuning": "ch11",
    "12_serving": "ch12",
    "13_open_models": "ch13",
    "14_preferences": "ch14",
    "A_backprop": "appendix_a",
    "C_lora": "appendix_c",
    "D_pytorch": "appendix_d",
}
# Pages that teach no mechanism of their own.
NO_DIAGRAMS = {"intro", "B_solutions", "references"}


def toc_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [
        c["file"] for part in toc["parts"] for c in part["chapters"]
    ]
    pages = []
    for entry in files:
        for ext in (".ipynb", ".md"):
            if (ROOT / f"{entry}{ext}").exists():
                pages.append(ROOT / f"{entry}{ext}")
    return pages


PAGES = toc_pages()
SHOWN = {p.stem: figures(p) for p in PAGES}


def test_the_book_has_at_least_30_concept_diagrams():
    assert len(STEMS) >= 30, f"{len(STEMS)} diagrams"


def test_every_page_that_teaches_a_mechanism_has_two():
    assert set(MODULE) | NO_DIAGRAMS == set(SHOWN), (
        "a page of the toc is missing from MODULE or NO_DIAGRAMS"
    )
    for page, shown in SHOWN.items():
        if page in NO_DIAGRAMS:
            assert shown == [], f"{page} shows a figure: add it to MODULE"
        else:
            assert len(shown) >= 2, f"{page} shows {len(shown)} diagram(s)"


def test_each_diagram_is_shown_once_by_its_own_chapter():
    shown = {}
    for page, figs in SHOWN.items():
        for fig in figs:
            stem = fig["path"].removeprefix("figures/").removesuffix(".*")
            assert fig["path"] == f"figures/{stem}.*", (
                f"{page}: {fig['path']}: figures are figures/<stem>.* (the "
                "build picks SVG for the website and PDF for the PDF)"
            )
            assert stem in diagrams.DIAGRAMS, (
                f"{page} shows {fig['path']}, which no function of "
                "book/diagrams draws"
            )
            assert stem not in shown, f"{stem} is shown twice"
            shown[stem] = page
            assert diagrams.CHAPTERS[stem] == MODULE[page], (
                f"{stem} is drawn in {diagrams.CHAPTERS[stem]}.py but "
                f"shown in {page}"
            )
    assert sorted(shown) == STEMS, (
        f"drawn but never shown: {sorted(set(STEMS) - set(shown))}"
    )


@pytest.mark.parametrize("page", sorted(set(MODULE)))
def test_each_figure_has_a_label_alt_text_and_caption_and_is_referenced(
    page,
):
    path = next(p for p in PAGES if p.stem == page)
    cited = references(path)
    for fig in SHOWN[page]:
        stem = fig["path"].removeprefix("figures/").removesuffix(".*")
        assert fig["name"] == f"fig-{stem}", (
            f"{fig['path']}: its :name: must be fig-{stem}"
        )
        assert len(fig["alt"]) >= 40, (
            f"{fig['name']}: :alt: must describe the drawing in words"
        )
        assert len(fig["caption"]) >= 20, f"{fig['name']} has no caption"
        assert fig["name"] in cited, (
            f"{page} never refers to {fig['name']} ({{numref}}`...`)"
        )


def _corners(t, renderer):
    """The four corners of a label's ink box on the page, in pixels: its
    box at rotation 0, turned by its rotation about the centre of the
    (axis-aligned) box that matplotlib reports for the rotated label."""
    box = t.get_window_extent(renderer)
    angle = np.radians(t.get_rotation())
    rotation = t.get_rotation()
    t.set_rotation(0)
    flat = t.get_window_extent(renderer)
    t.set_rotation(rotation)
    w, h = flat.width / 2, flat.height / 2
    c, s = np.cos(angle), np.sin(angle)
    local = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    turned = local @ np.array([[c, s], [-s, c]])
    return turned + [(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2]


def _overlap(a, b, slack=1.0):
    """Whether two convex quadrilaterals overlap by more than `slack`
    pixels (separating axis test: they are apart when their projections
    on some edge normal do not meet)."""
    for quad in (a, b):
        for i in range(4):
            edge = quad[(i + 1) % 4] - quad[i]
            normal = np.array([-edge[1], edge[0]]) / np.hypot(*edge)
            pa, pb = a @ normal, b @ normal
            if pa.max() - slack <= pb.min() or pb.max() - slack <= pa.min():
                return False
    return True


def label_problems(fig):
    """Labels cut off at the figure's edge, and pairs of labels drawn over
    each other (by their boxes, turned with the text, to a pixel)."""
    with plt.rc_context(diagrams.style.RC):
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        labels = [
            t
            for t in fig.findobj(plt.Text)
            if t.get_text().strip() and t.get_visible()
        ]
        boxes = [(t.get_text(), _corners(t, renderer)) for t in labels]
    edge = fig.bbox
    outside = [
        s
        for s, q in boxes
        if q[:, 0].min() < edge.x0 - 1
        or q[:, 1].min() < edge.y0 - 1
        or q[:, 0].max() > edge.x1 + 1
        or q[:, 1].max() > edge.y1 + 1
    ]
    clashes = [
        (s, t)
        for i, (s, a) in enumerate(boxes)
        for t, b in boxes[i + 1 :]
        if _overlap(a, b)
    ]
    return outside, clashes


@pytest.mark.parametrize("stem", STEMS)
def test_a_diagram_keeps_its_labels_inside_and_apart(stem):
    fig = diagrams.DIAGRAMS[stem]()
    try:
        outside, clashes = label_problems(fig)
    finally:
        plt.close(fig)
    assert not outside, f"{stem}: labels cut off at the edge: {outside}"
    assert not clashes, f"{stem}: labels drawn over each other: {clashes}"


def test_the_label_check_finds_what_it_looks_for():
    fig, ax = diagrams.style.canvas(2.0, 1.0)
    diagrams.style.text(ax, (1.0, 0.5), "one label")
    diagrams.style.text(ax, (1.1, 0.55), "another")
    diagrams.style.text(ax, (1.95, 0.2), "cut off")
    diagrams.style.text(ax, (0.3, 0.85), "apart")
    # Turned labels side by side: their upright boxes overlap, their ink
    # does not.
    for x in (0.25, 0.5):
        diagrams.style.text(ax, (x, 0.3), "turned", rotation=45)
    try:
        outside, clashes = label_problems(fig)
    finally:
        plt.close(fig)
    assert outside == ["cut off"]
    assert clashes == [("one label", "another")]


def test_the_build_writes_both_formats(tmp_path):
    drawn = build.build(tmp_path, names=STEMS[:2])
    for stem in drawn:
        for ext in ("svg", "pdf"):
            assert (tmp_path / f"{stem}.{ext}").stat().st_size > 1000


def test_the_figures_folder_is_not_committed():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/book/figures/" in ignored
    assert BOOK / "figures" == build.OUT
