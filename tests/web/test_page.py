"""The demo page at / driven in headless Chromium: upload, pre-flight, a job, its report.

Models are trained here for a moment on the 8x8 digits and exported the way users export
them, so each job takes seconds.  Screenshots go to out/web/.
"""

from __future__ import annotations

import random
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from core.report import checkpoints

pytestmark = pytest.mark.integration

JOB_TIMEOUT_MS = 240_000
UPLOAD_TIMEOUT_MS = 120_000  # the pre-flight child imports torch: slow on a busy 2-core machine
METHODS = ["robust-norm", "max-norm"]
T = 16
FINISHED = re.compile(r"^(succeeded|failed|cancelled)$")
HOSTILE_NAME = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def expect(*args, **kwargs):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(*args, **kwargs)


def page_accuracy(fraction: float) -> str:
    """How the page prints a top-1 fraction: JavaScript's (100 * a).toFixed(2), which
    rounds the double's exact value half up."""
    return str(Decimal(100 * fraction).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@pytest.fixture(scope="module")
def trained_mlp():
    from torch import nn

    from tests.conftest import _train_digits_mlp

    model, shape = _train_digits_mlp(nn.ReLU())
    return model.eval(), shape


def _user_export(model, shape, folder: Path, exporter: str) -> list[Path]:
    """``torch.onnx.export`` as users call it; the files a user would then upload."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlp.onnx"
    example = torch.zeros(1, *shape)
    if exporter == "default":
        torch.onnx.export(model, (example,), str(path))  # the dynamo exporter, weights beside
    else:
        torch.onnx.export(model, (example,), str(path), dynamo=False)
    beside = path.with_name(path.name + ".data")
    return [path] + ([beside] if beside.exists() else [])


@pytest.fixture(scope="module")
def exports(trained_mlp, tmp_path_factory):
    """exporter ("default" | "legacy") -> the files to upload, exported once per module."""
    made: dict[str, list[Path]] = {}

    def export(exporter: str) -> list[Path]:
        if exporter not in made:
            folder = tmp_path_factory.mktemp(f"export-{exporter}")
            made[exporter] = _user_export(*trained_mlp, folder, exporter)
        return made[exporter]

    return export


@pytest.fixture(scope="module")
def linear_onnx(tmp_path_factory) -> Path:
    """An MLP without any activation: it loads, but nothing can become a spiking neuron."""
    import torch

    from tests.conftest import _train_digits_mlp

    model, shape = _train_digits_mlp(None)
    path = tmp_path_factory.mktemp("linear") / "linear.onnx"
    torch.onnx.export(model.eval(), (torch.zeros(1, *shape),), str(path), dynamo=False)
    return path


def _upload(web, files, name: str | None = None) -> None:
    page = web.page
    page.set_input_files("#upload-file", files)
    if name is not None:
        page.fill("#upload-name", name)
    page.click("#upload-submit")


def _upload_model(web, files, name: str | None = None) -> None:
    """Upload through the form and wait for its pre-flight report."""
    _upload(web, [str(f) for f in files], name)
    expect(web.page.locator("#preflight")).to_be_visible(timeout=UPLOAD_TIMEOUT_MS)


def _choose(page, dataset: str, methods: list[str], timesteps: int) -> None:
    page.select_option("#opt-dataset", dataset)
    for box in page.locator("input[name=methods]").all():
        box.set_checked(box.get_attribute("value") in methods)
    page.fill("#opt-timesteps", str(timesteps))


def _wait_finished(page) -> str:
    status = page.locator("#job-status")
    expect(status).to_have_attribute("data-status", FINISHED, timeout=JOB_TIMEOUT_MS)
    return status.get_attribute("data-status")


@pytest.mark.parametrize("exporter", ["default", "legacy"])
def test_upload_convert_and_read_the_report(web, exports, exporter):
    page = web.page
    web.open()
    files = exports(exporter)
    _upload_model(web, files)
    preflight = page.locator("#preflight")
    expect(preflight).to_have_attribute("data-convertible", "true")
    expect(page.locator("#preflight-counts [data-status=converted]")).to_be_visible()
    expect(page.locator("#preflight-nodes tbody tr").first).to_be_attached()
    expect(page.locator("#models [data-model-id]")).to_have_count(1)

    _choose(page, "digits", METHODS, T)
    page.click("#job-submit")
    expect(page.locator("#progress")).to_be_visible()
    status = _wait_finished(page)
    assert status == "succeeded", page.locator("#job-failure").inner_text()
    expect(page.locator("#job-percent")).to_have_text("100 %")

    result = page.locator("#result")
    expect(result).to_be_visible()
    job_id = result.get_attribute("data-job-id")
    response = page.request.get(f"/v1/jobs/{job_id}/report")  # the page's cookie: its scope
    assert response.ok, response.text()
    report = response.json()
    assert sorted(m["method"] for m in report["methods"]) == sorted(METHODS)

    # the chart: one series per method and the ANN's dashed line
    series = page.locator("#result-chart [data-series]")
    expect(series).to_have_count(len(METHODS) + 1)
    names = {series.nth(i).get_attribute("data-series") for i in range(series.count())}
    assert names == {*METHODS, "ann"}
    ann_line = page.locator('#result-chart [data-series="ann"] line')
    assert ann_line.get_attribute("stroke-dasharray")
    expect(page.locator('#result-chart [data-series="robust-norm"] circle title').first
           ).to_have_text(re.compile(r"robust-norm, t = 1: \d+\.\d\d %"))

    # the table: t = 1, 2, 4, …, T, cells equal to report.json
    points = checkpoints(T)
    expect(page.locator("#accuracy-table thead th")).to_have_text(
        ["method", *[f"t={t}" for t in points]])
    for method in report["methods"]:
        row = page.locator(f'#accuracy-table tr[data-method="{method["method"]}"]')
        expect(row.locator("td[data-t]")).to_have_text(
            [page_accuracy(method["top1"][t - 1]) for t in points])
    expect(page.locator("#accuracy-table caption")).to_contain_text(
        page_accuracy(report["ann"]["top1"]))

    # latency, energy beside the ANN's, one layer chart per method
    expect(page.locator("#latency-table tbody tr")).to_have_count(len(METHODS))
    quantised_rows = int(report["ann"].get("quantised") is not None)  # the integer-ANN baseline
    expect(page.locator("#energy-table tbody tr")).to_have_count(len(METHODS) + 1 + quantised_rows)
    expect(page.locator('#energy-table tr[data-method="ann"]')).to_contain_text(
        f"{report['ann']['macs']:,} MACs")
    expect(page.locator("#layer-charts [data-layer-chart]")).to_have_count(len(METHODS))
    first_layer = report["methods"][0]["layers"][0]["name"]
    expect(page.locator(f'[data-layer-chart="{METHODS[0]}"] [data-layer="{first_layer}"]')
           ).to_be_attached()

    # downloads: the report files, and no CQ model for a classic-only job
    links = page.locator("#downloads a[data-download]")
    files_linked = [links.nth(i).get_attribute("data-download") for i in range(links.count())]
    assert files_linked[:3] == ["report.json", "report.csv", "accuracy.png"]
    assert not [name for name in files_linked if name.startswith("cq-")]
    for i in range(links.count()):
        href = links.nth(i).get_attribute("href")
        assert page.request.get(href).status == 200, href

    # the visitor's past jobs list it
    expect(page.locator(f'#jobs tr[data-job-id="{job_id}"] .status')).to_have_text("succeeded")
    web.screenshot(f"result-{exporter}.png")
    if exporter == "default":
        web.screenshot("result-page.png")
    web.assert_clean()


def test_the_choice_of_t_and_the_integer_ann_baseline(web, exports):
    """A max gap and the int8 profile: the page shows report.latency_choice (its table, the
    target line and one ring per method that met it) and the quantised ANN's energy row."""
    page = web.page
    web.open()
    _upload_model(web, exports("default"))
    _choose(page, "digits", METHODS, T)
    page.locator("#job-more summary").click()
    page.fill("#opt-max_gap", "0.05")
    page.select_option("#opt-energy_profile", "horowitz-45nm-int8")
    page.click("#job-submit")
    assert _wait_finished(page) == "succeeded", page.locator("#job-failure").inner_text()
    job_id = page.locator("#result").get_attribute("data-job-id")
    response = page.request.get(f"/v1/jobs/{job_id}/report")
    assert response.ok, response.text()
    report = response.json()
    choice = report["latency_choice"]
    assert choice is not None and report["spec"]["max_gap"] == 0.05

    box = page.locator("#choice")
    expect(box).to_be_visible()
    expect(box.locator("#choice-target")).to_contain_text(
        f"{page_accuracy(choice['target_top1'])} % ({choice['basis']})")
    rows = box.locator("#choice-table tbody tr")
    expect(rows).to_have_count(len(choice["methods"]))
    for row, entry in zip(rows.all(), choice["methods"], strict=True):
        assert row.get_attribute("data-method") == entry["method"]
        reached = entry["t"] is not None
        expect(row.locator('td[data-col="t"]')).to_have_text(
            str(entry["t"]) if reached else "not reached")
        expect(row.locator('td[data-col="steps"]')).to_have_text(
            str(entry["end_to_end_steps"]) if reached else "–")
        if reached:
            expect(row.locator('td[data-col="top1"]')).to_have_text(page_accuracy(entry["top1"]))
    recommended = box.locator('#choice-table tr[data-recommended="true"]')
    if choice["recommended"] is None:
        expect(recommended).to_have_count(0)
    else:
        expect(recommended).to_have_count(1)
        expect(recommended).to_have_attribute("data-method", choice["recommended"])
        expect(recommended.locator("th")).to_contain_text("recommended")
    expect(box.locator("#choice-reason")).to_contain_text(choice["reason"])

    # the chart: the series are unchanged; the target and the chosen t are marks beside them
    chart = page.locator("#result-chart")
    expect(chart.locator("[data-series]")).to_have_count(len(METHODS) + 1)
    expect(chart.locator("[data-target-line]")).to_have_count(1)
    met = sorted(entry["method"] for entry in choice["methods"] if entry["t"] is not None)
    dots = chart.locator("[data-choice]")
    expect(dots).to_have_count(len(met))
    assert sorted(dot.get_attribute("data-choice") for dot in dots.all()) == met

    # energy: the int8 profile named, the quantised ANN's row after the ANN's
    quantised = report["ann"]["quantised"]
    assert report["energy_model"]["profile"] == "horowitz-45nm-int8"
    assert quantised is not None
    energy_rows = page.locator("#energy-table tbody tr")
    assert energy_rows.nth(1).get_attribute("data-method") == "ann-quantised"
    row = page.locator('#energy-table tr[data-method="ann-quantised"]')
    expect(row).to_contain_text(f"{quantised['bits']}-bit integer ({quantised['profile']})")
    expect(row.locator("td").last).to_have_text(
        f"{quantised['energy_uj'] / report['ann']['energy_uj']:.2f}×")
    expect(page.locator("#energy-note")).to_contain_text("horowitz-45nm-int8")
    web.screenshot("result-choice.png")
    web.assert_clean()


def test_hostile_uploads_are_refused_with_the_problem_and_not_kept(web):
    import pickle

    page = web.page
    web.open()
    noise = random.Random(0).randbytes(4096)
    evil = pickle.dumps({"weights": _Evil()})  # never loaded here: only its bytes are sent
    for filename, content in [("model.onnx", noise), ("model.pt", evil)]:
        expected = page.request.post("/v1/models", multipart={"file": {
            "name": filename, "mimeType": "application/octet-stream", "buffer": content}})
        assert expected.status == 422, expected.text()
        problem = expected.json()
        _upload(web, [{"name": filename, "mimeType": "application/octet-stream",
                       "buffer": content}])
        box = page.locator("#upload-error")
        expect(box).to_be_visible(timeout=UPLOAD_TIMEOUT_MS)
        expect(box.locator(".problem-title")).to_have_text(problem["title"])
        expect(box.locator(".problem-detail")).to_have_text(problem["detail"])
        expect(box).to_have_attribute("data-code", problem["code"])
        web.screenshot(f"refused-{filename.replace('.', '-')}.png")
    assert problem["code"] == "pickle"
    expect(page.locator("#models [data-model-id]")).to_have_count(0)
    expect(page.locator("#models-empty")).to_be_visible()
    expect(page.locator("#preflight")).to_be_hidden()
    web.open()  # after a reload too
    expect(page.locator("#models [data-model-id]")).to_have_count(0)
    assert page.request.get("/v1/models").json()["count"] == 0
    web.assert_clean()


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


def test_user_supplied_text_is_shown_as_text_never_markup(web, exports):
    page = web.page
    web.open()
    scripts = page.locator("script").count()
    graph = exports("legacy")[0]
    hostile_file = "<img src=x onerror=alert(3)>.onnx"
    _upload(web, [{"name": hostile_file, "mimeType": "application/octet-stream",
                   "buffer": graph.read_bytes()}], name=HOSTILE_NAME)
    expect(page.locator("#preflight")).to_be_visible(timeout=UPLOAD_TIMEOUT_MS)
    expect(page.locator("#preflight-name")).to_have_text(HOSTILE_NAME)
    expect(page.locator("#models [data-model-id] .item-name")).to_have_text(HOSTILE_NAME)
    expect(page.locator("#job-model")).to_contain_text(HOSTILE_NAME)
    expect(page.locator("#upload-status")).to_contain_text(HOSTILE_NAME)
    # a refusal whose detail might echo the file name: shown as text as well
    _upload(web, [{"name": hostile_file, "mimeType": "application/octet-stream",
                   "buffer": b"<script>alert(5)</script>"}])
    expect(page.locator("#upload-error")).to_be_visible(timeout=UPLOAD_TIMEOUT_MS)
    assert page.locator("script").count() == scripts == 1  # app.js alone
    assert page.locator("img").count() == 0
    assert page.locator("[onerror]").count() == 0
    web.screenshot("hostile-name.png")
    web.assert_clean()


def test_a_job_that_fails_shows_its_problem_and_stage(web, linear_onnx):
    page = web.page
    web.open()
    _upload_model(web, [linear_onnx])
    expect(page.locator("#preflight")).to_have_attribute("data-convertible", "false")
    expect(page.locator("#preflight-problems")).to_be_visible()
    _choose(page, "digits", ["robust-norm"], 4)
    page.click("#job-submit")
    assert _wait_finished(page) == "failed"
    job_id = page.locator("#progress").get_attribute("data-job-id")
    error = page.request.get(f"/v1/jobs/{job_id}").json()["error"]
    failure = page.locator("#job-failure")
    expect(failure.locator(".problem-title")).to_have_text(error["title"])
    expect(failure.locator(".problem-detail")).to_have_text(error["detail"])
    expect(failure).to_contain_text(f"stage: {error['stage']}")
    expect(page.locator("#result")).to_be_hidden()
    web.screenshot("failed-job.png")
    web.assert_clean()


def test_invalid_options_get_the_api_messages_beside_their_fields(web, exports):
    page = web.page
    web.open()
    # every option is rendered from the OpenAPI's JobCreate, with its help line
    schema = page.request.get("/openapi.json").json()["components"]["schemas"]["JobCreate"]
    timesteps_help = schema["properties"]["timesteps"]["description"]
    expect(page.locator("#help-timesteps")).to_contain_text(timesteps_help)
    for name in schema["properties"]:
        if name not in {"model_id", "cq", "methods"}:
            expect(page.locator(f"#opt-{name}")).to_be_attached()
            expect(page.locator(f'label[for="opt-{name}"]')).to_be_attached()
    expect(page.locator("#opt-batch_size")).to_have_value(str(schema["properties"]
                                                             ["batch_size"]["default"]))
    # examples the server has not built are listed, but cannot be picked
    for example in page.locator("#examples [data-example]").all():
        button = example.locator("button")
        if example.get_attribute("data-available") == "false":
            expect(button).to_be_disabled()
    _upload_model(web, exports("legacy"))
    _choose(page, "digits", ["robust-norm"], 0)
    page.locator("#job-cq summary").click()
    page.fill("#opt-cq-levels", "0")
    page.click("#job-submit")
    expect(page.locator("#job-error")).to_be_visible()
    expect(page.locator("#job-error .problem-title")).to_have_text("Request validation failed")
    expect(page.locator("#err-timesteps")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#opt-timesteps")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#err-cq-levels")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#progress")).to_be_hidden()
    web.screenshot("invalid-options.png")

    # a bad API key: the 401 problem and what to do about it
    page.locator("#api-key-box summary").click()
    page.fill("#api-key", "snk_not-a-key")
    page.click("#api-key-form button[type=submit]")
    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice.locator(".problem-title")).to_have_text("Unauthorized")
    expect(notice).to_contain_text("API key")
    page.click("#api-key-clear")
    expect(notice).to_be_hidden()
    web.assert_clean()


def test_an_example_model_runs_the_papers_suite(web):
    """Pick the CQ-trained example: its pre-flight shows the CQ layers, and cq-asg at T = 4
    reads out after depth × T steps, as the latency table says."""
    page = web.page
    web.open()
    example = page.locator('#examples [data-example="demo-cnn-cq"]')
    expect(example).to_have_attribute("data-available", "true")
    example.locator("button").click()
    expect(page.locator("#preflight")).to_have_attribute("data-convertible", "true",
                                                         timeout=UPLOAD_TIMEOUT_MS)
    model_id = page.locator("#preflight").get_attribute("data-model-id")
    model = page.request.get(f"/v1/models/{model_id}").json()
    assert model["format"] == "onnx" and model["preflight"]["cq_layers"] > 0

    _choose(page, "mnist-5k", ["cq-asg"], 4)
    page.fill("#opt-eval_samples", "200")
    page.click("#job-submit")
    assert _wait_finished(page) == "succeeded", page.locator("#job-failure").inner_text()
    job_id = page.locator("#result").get_attribute("data-job-id")
    report = page.request.get(f"/v1/jobs/{job_id}/report").json()
    (method,) = report["methods"]
    assert method["top1"][-1] > 0.9  # the CQ-trained CNN keeps its accuracy at T = 4
    series = page.locator("#result-chart [data-series]")
    expect(series).to_have_count(2)
    latency = method["latency"]
    assert latency["end_to_end_steps"] == latency["window"] * 3  # cnn-small: 3 spiking layers
    expect(page.locator('#latency-table tr[data-method="cq-asg"]')).to_contain_text(
        f"{latency['end_to_end_steps']} = depth 3 × T 4")
    web.screenshot("example-cq-asg.png")
    web.assert_clean()


def test_the_page_works_without_examples(web):
    page = web.page
    page.route("**/v1/examples", lambda route: route.fulfill(
        status=404, content_type="application/problem+json",
        body='{"type": "urn:snnconv:problem:not-found", "title": "Not Found", "status": 404, '
             '"detail": "Not Found", "code": "not-found"}'))
    web.open()
    expect(page.locator("#examples-card")).to_be_hidden()
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#upload-submit")).to_be_enabled()
    expect(page.locator("#opt-dataset option").first).to_be_attached()
    web.assert_clean()


def test_cancel_stops_a_long_job(web, exports):
    page = web.page
    web.open()
    _upload_model(web, exports("legacy"))
    _choose(page, "digits", ["robust-norm", "max-norm", "channel-norm"], 4096)
    page.click("#job-submit")
    expect(page.locator("#job-status")).to_have_attribute(
        "data-status", re.compile("queued|running"))
    page.click("#job-cancel")
    assert _wait_finished(page) == "cancelled"
    expect(page.locator("#job-failure .problem-title")).to_have_text("Job cancelled")
    expect(page.locator("#result")).to_be_hidden()
    web.assert_clean()


@pytest.mark.parametrize("web", [{"width": 375, "height": 800}], indirect=True)
def test_phone_width_has_no_horizontal_scroll(web, exports):
    page = web.page
    web.open()

    def page_width() -> int:
        return page.evaluate("document.documentElement.scrollWidth")

    assert page_width() <= 375
    _upload_model(web, exports("legacy"), name="phone " + "x" * 120)
    page.locator("#preflight-nodes-box summary").click()
    assert page_width() <= 375
    _choose(page, "digits", METHODS, 8)
    submit = page.locator("#job-submit")
    submit.scroll_into_view_if_needed()
    expect(submit).to_be_in_viewport()
    box = submit.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    submit.click()
    assert _wait_finished(page) == "succeeded", page.locator("#job-failure").inner_text()
    expect(page.locator("#result")).to_be_visible()
    page.locator("#job-more summary").click()
    assert page_width() <= 375
    web.screenshot("phone.png")
    web.assert_clean()
