"""``wrcup.eval.compare`` pure parts: the rows of the table and the chart drawn from them."""
import matplotlib.pyplot as plt
import pytest

from wrcup.eval.compare import comparison_chart, comparison_figure, markdown_table


def _run(method, task, value, **extra):
    key = {"fidelity": "cosine", "davis": "J&F-Mean"}[task]
    return {"model": "m.safetensors", "method": method, "task": task, "backbone": "vit", "operator": "wrc-reference",
            "result": {key: value}, **extra}


@pytest.fixture()
def result():
    return {
        "tasks": ["fidelity", "davis"], "methods": ["none", "bilinear", "learned"], "models": ["m.safetensors"],
        "runs": [
            _run("none", "fidelity", 0.8811), _run("bilinear", "fidelity", 0.8898), _run("learned", "fidelity", 0.9113),
            _run("none", "davis", 75.07), _run("learned", "davis", 74.30),
            {"model": "m.safetensors", "method": "bilinear", "task": "davis", "skipped": "not run"},
        ],
    }


def test_chart_axes_span_the_values_not_zero(result):
    fig = comparison_figure(result)
    try:
        fidelity, davis = fig.axes
        low, high = fidelity.get_ylim()
        assert 0.85 < low < 0.8811 and 0.9113 < high < 0.95  # bars from zero would flatten 0.88 … 0.91
        low, high = davis.get_ylim()
        assert 73 < low < 74.30 and 75.07 < high < 77
    finally:
        plt.close(fig)


def test_chart_draws_no_dot_for_a_missing_value(result):
    fig = comparison_figure(result)
    try:
        fidelity, davis = fig.axes
        dots = lambda ax: sorted((float(l.get_xdata()[0]), float(l.get_ydata()[0])) for l in ax.get_lines())  # noqa: E731
        assert dots(fidelity) == [(0.0, 0.8811), (1.0, 0.8898), (2.0, 0.9113)]
        assert dots(davis) == [(0.0, 75.07), (2.0, 74.30)]  # the skipped bilinear run is absent, not a zero
        assert [t.get_text() for t in davis.texts] == ["75.07", "74.3"]
    finally:
        plt.close(fig)


def test_chart_is_written_as_png(result, tmp_path):
    path = comparison_chart(result, tmp_path / "sub" / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["chart.png"]  # no temporary left behind


def test_markdown_marks_the_missing_value(result):
    lines = markdown_table(result).splitlines()
    assert lines[3].split("|")[2:5] == [" bilinear ", " 0.8898 ", " — "]
