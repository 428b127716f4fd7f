"""The web page in a real browser (headless Chromium) against a live ``python server.py`` with the toy model:
open a workflow, edit it, queue it, watch it, find the image in the gallery, cancel a job, reload, reconnect."""
from __future__ import annotations

import json
import re
import time

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.timeout(300)
TXT2IMG = ROOT / "workflows" / "txt2img.json"


def wait(driver, condition, timeout: float = 60, what: str = ""):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,)
                         ).until(lambda d: condition(d), what)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def click(driver, selector: str) -> None:
    """Click, again if the element was replaced meanwhile (the queue re-renders as job states change)."""
    wait(driver, lambda d: css(d, selector).click() or True, 10, f"click {selector}")


def set_field(driver, name: str, value: str) -> None:
    field = css(driver, f'[name="{name}"]')
    field.clear()
    field.send_keys(value)


def job_states(driver) -> dict[str, str]:
    """The Watch tab's queue, newest first: job id → status (read in one step: the list re-renders)."""
    pairs = driver.execute_script(  # pairs, not an object: the driver sorts an object's keys
        "return [...document.querySelectorAll('#queue li[data-job]')].map(li => [li.dataset.job, li.dataset.status])")
    return dict(pairs)


def drop_file(driver, name: str, text: str) -> None:
    """Drop a file on the Run tab, as dragging it from the desktop does."""
    driver.execute_script("""const [name, text] = arguments, data = new DataTransfer();
        data.items.add(new File([text], name, {type: "application/json"}));
        document.getElementById("run").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));""",
                          name, text)


def page_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    wait(driver, lambda d: css(d, "#connection").get_attribute("data-state") == "live", 30, "the WebSocket connects")


def test_run_watch_gallery_cancel_and_reload(browser, live_server, artifacts, tmp_path):
    server = live_server()
    driver = browser
    open_page(driver, server.url)
    from selenium.webdriver.common.keys import Keys

    css(driver, "#tab-run").send_keys(Keys.ARROW_RIGHT)  # the tab list is keyboard-driven, focus moves along
    assert driver.switch_to.active_element.get_attribute("id") == "tab-watch" and css(driver, "#watch").is_displayed()
    driver.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    assert css(driver, "#run").is_displayed() and not css(driver, "#watch").is_displayed()

    css(driver, "#open-file").send_keys(str(TXT2IMG))
    wait(driver, lambda d: len(all_css(d, "#run-graph g.node")) == 9, 10, "the graph is drawn")
    assert len(all_css(driver, "#run-graph path.link")) == 13  # one per link in the file
    sampler = css(driver, 'select[name="schedule.sampler"]')  # an enum is a select with the catalog's values
    assert sampler.get_attribute("value") == "euler_a" and len(all_css(driver, 'select[name="schedule.sampler"] option')) > 5
    steps = css(driver, 'input[name="schedule.steps"]')
    assert (steps.get_attribute("min"), steps.get_attribute("max")) == ("1", "1000")
    seed = css(driver, 'input[name="noise.seed"]')
    css(driver, 'button[aria-label="new seed for noise.seed"]').click()
    assert seed.get_attribute("value") != "42" and seed.get_attribute("value").isdigit()

    # a problem the server finds is shown on the input it names, and on the graph's node
    set_field(driver, "ckpt.name", "no-such-model")
    css(driver, "#submit").click()
    error = wait(driver, lambda d: next((e for e in all_css(d, ".field .error-text") if e.is_displayed()), None), 20)
    assert "no-such-model" in error.text and error.get_attribute("id").endswith("-error")
    assert css(driver, '[name="ckpt.name"]').get_attribute("aria-invalid") == "true"
    assert "error" in css(driver, '#run-graph g[data-node="ckpt"]').get_attribute("class")
    assert job_states(driver) == {}

    set_field(driver, "ckpt.name", "toy-shapes")  # editing the input clears its error
    assert css(driver, '[name="ckpt.name"]').get_attribute("aria-invalid") is None and not error.is_displayed()
    assert "error" not in css(driver, '#run-graph g[data-node="ckpt"]').get_attribute("class")
    set_field(driver, "positive.text", "a blue square on a white background")
    set_field(driver, "sample.preview_every", "1")
    driver.save_screenshot(str(artifacts / "web-run.png"))
    submitted = time.monotonic()
    css(driver, "#submit").click()
    wait(driver, lambda d: css(d, "#preview-box").is_displayed(), 120, "a step preview streams in")
    first_preview = time.monotonic() - submitted
    assert css(driver, "#preview").get_attribute("src").startswith("data:image/png;base64,")
    first = next(iter(job_states(driver)))
    wait(driver, lambda d: job_states(d)[first] == "succeeded", 120, "the first job succeeds")
    wait(driver, lambda d: css(d, "#job-progress").get_attribute("value") == "1", 10, "the job's bar is full")
    assert all(bar.get_attribute("value") == "1" for bar in all_css(driver, "#node-progress progress"))
    driver.save_screenshot(str(artifacts / "web-watch.png"))

    # a second, longer job: cancelled while it runs
    css(driver, "#tab-run").click()
    set_field(driver, "schedule.steps", "200")
    set_field(driver, "empty.width", "128")
    set_field(driver, "empty.height", "128")
    submitted = time.monotonic()
    css(driver, "#submit").click()
    wait(driver, lambda d: len(job_states(d)) == 2, 10)
    second = next(job for job in job_states(driver) if job != first)
    wait(driver, lambda d: css(d, "#preview-box").is_displayed(), 60, "the second job's previews stream in")
    warm_preview = time.monotonic() - submitted
    wait(driver, lambda d: job_states(d)[second] == "running" and "running" in
         (css(d, '#watch-graph g[data-node="sample"]').get_attribute("class") or ""), 60, "the sampler runs, highlighted")
    wait(driver, lambda d: 0.15 < float(css(d, '#node-progress li[data-node="sample"] progress').get_attribute("position")),
         30, "the sampler's bar moves")
    assert 0.5 < float(css(driver, "#job-progress").get_attribute("value")) < 1
    driver.save_screenshot(str(artifacts / "web-running.png"))

    # a third job waits behind it at its priority, and is cancelled before it starts
    css(driver, "#tab-run").click()
    css(driver, "#priority").clear()
    css(driver, "#priority").send_keys("5")
    css(driver, "#submit").click()
    wait(driver, lambda d: len(job_states(d)) == 3, 10)
    third = next(job for job in job_states(driver) if job not in (first, second))
    wait(driver, lambda d: "priority 5" in css(d, f'#queue li[data-job="{third}"] .meta').text
         and "position 1 in the queue" in css(d, f'#queue li[data-job="{third}"] .meta').text, 10, "the third job waits")
    click(driver, f'#queue li[data-job="{third}"] button.cancel')
    wait(driver, lambda d: job_states(d)[third] == "cancelled", 10, "the queued job is cancelled")
    assert job_states(driver)[second] == "running"
    click(driver, f'#queue li[data-job="{second}"] button.cancel')
    wait(driver, lambda d: job_states(d)[second] == "cancelled", 60, "the second job is cancelled")

    # the gallery: the image, its parameters, its workflow back in the Run tab
    css(driver, "#tab-gallery").click()
    thumb = wait(driver, lambda d: next((i for i in all_css(d, "#gallery-grid img") if (i.get_attribute("src") or "").startswith("blob:")), None), 20)
    assert len(all_css(driver, "#gallery-grid li[data-job]")) == 1
    thumb.click()
    wait(driver, lambda d: "a blue square on a white background" in css(d, "#viewer-params").text, 10, "parameters shown")
    assert css(driver, "#viewer-download").get_attribute("href").startswith("blob:")
    driver.save_screenshot(str(artifacts / "web-gallery.png"))
    css(driver, "#viewer-load").click()
    wait(driver, lambda d: css(d, '[name="positive.text"]').get_attribute("value") == "a blue square on a white background", 10)

    # a PNG the server wrote opens with the workflow it carries
    css(driver, "#open-file").send_keys(str(server.data_dir / "outputs" / "txt2img_00001.png"))
    wait(driver, lambda d: "txt2img_00001.png: 9 nodes" in css(d, "#workflow-name").text, 10, "the PNG's workflow opens")
    assert css(driver, '[name="positive.text"]').get_attribute("value") == "a blue square on a white background"

    # after a reload the page shows what the server kept
    driver.refresh()
    wait(driver, lambda d: css(d, "#connection").get_attribute("data-state") == "live", 30)
    css(driver, "#tab-watch").click()
    wait(driver, lambda d: job_states(d) == {third: "cancelled", second: "cancelled", first: "succeeded"}, 20,
         "the jobs after a reload")
    assert list(job_states(driver)) == [third, second, first]  # newest first
    driver.save_screenshot(str(artifacts / "web-reload.png"))

    # every shipped workflow opens with its whole graph; a ComfyUI workflow is drawn and sent as it is
    css(driver, "#tab-run").click()
    for path in sorted((ROOT / "workflows").glob("*.json")):
        css(driver, "#open-file").send_keys(str(path))
        count = len(json.loads(path.read_text())["nodes"])
        wait(driver, lambda d: css(d, "#workflow-name").text == f"{path.name}: {count} nodes"
             and len(all_css(d, "#run-graph g.node")) == count, 10, path.name)
        if path.name == "denoise_animation.json":  # an exclusive bound: fps > 0
            set_field(driver, "animate.fps", "0")
            assert css(driver, '[name="animate.fps"]').get_attribute("validationMessage") == "must be more than 0"
            set_field(driver, "animate.fps", "0.5")
            assert css(driver, '[name="animate.fps"]').get_attribute("validationMessage") == ""
    drop_file(driver, "comfy_api.json", json.dumps({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "hi"}}}))
    wait(driver, lambda d: "ComfyUI format" in css(d, "#workflow-name").text, 10)
    assert len(all_css(driver, "#run-graph g.node")) == 2 and len(all_css(driver, "#run-graph path.link")) == 1
    # what a file says is text, never markup
    hostile = tmp_path / "<img src=x>.json"
    hostile.write_text(json.dumps({"graphflow": 1, "nodes": {"<img src=x>": {"type": "SaveImage", "title": "<b>bold</b>",
                                                                            "inputs": {"filename_prefix": "<i>x</i>"}}}}))
    css(driver, "#open-file").send_keys(str(hostile))
    wait(driver, lambda d: "<b>bold</b>" in css(d, "#fields").text and "<img src=x>" in css(d, "#fields legend").text, 10)
    assert not all_css(driver, "#run img, #run b, #run i")

    # a phone's width: one column, nothing wider than the screen
    driver.set_window_size(390, 844)
    css(driver, "#open-file").send_keys(str(TXT2IMG))
    wait(driver, lambda d: len(all_css(d, "#run-graph g.node")) == 9, 10)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    driver.save_screenshot(str(artifacts / "web-phone.png"))
    errors = page_errors(driver)  # the console: no script error, no CSP violation; only the refused workflow's 400
    assert all("/jobs - Failed to load resource" in e and "400" in e for e in errors), errors
    timings = {"submit_to_first_preview_s": round(first_preview, 3), "warm_submit_to_first_preview_s": round(warm_preview, 3)}
    (artifacts / "web-timings.json").write_text(json.dumps(timings))
    print("submit → first preview:", timings)


def test_token_from_settings_and_reconnect_after_a_restart(browser, live_server):
    server = live_server("--token", "s3cret/token+")  # characters that need base64url in the WebSocket subprotocol
    driver = browser
    driver.get(server.url + "/")
    wait(driver, lambda d: "token" in css(d, "#connection").text, 20, "the page says it needs the token")
    css(driver, "#tab-settings").click()
    css(driver, "#token").send_keys("s3cret/token+")
    css(driver, "#settings-form button[type=submit]").click()
    wait(driver, lambda d: "accepts" in css(d, "#settings-status").text, 10)
    wait(driver, lambda d: css(d, "#connection").get_attribute("data-state") == "live", 30, "connected with the token")
    assert driver.execute_script("return sessionStorage.getItem('graphflow-token')") == "s3cret/token+"

    # an uploaded input image (sent with the token) becomes LoadImage's name
    css(driver, "#tab-run").click()
    css(driver, "#open-file").send_keys(str(ROOT / "workflows" / "img2img.json"))
    wait(driver, lambda d: all_css(d, 'input[aria-label="upload an image for image.name"]'), 10)
    css(driver, 'input[aria-label="upload an image for image.name"]').send_keys(str(ROOT / "workflows" / "assets" / "input.png"))
    wait(driver, lambda d: re.fullmatch(r"[0-9a-f]{64}\.png", css(d, '[name="image.name"]').get_attribute("value")), 10,
         "the upload's stored name fills the input")
    css(driver, "#submit").click()
    wait(driver, lambda d: list(job_states(d).values()) == ["succeeded"], 120, "the job runs with the token")

    driver.execute_script("""window.seenStates = [];
        new MutationObserver(() => seenStates.push(document.getElementById('connection').dataset.state))
            .observe(document.getElementById('connection'), {attributes: true});""")
    server.restart()
    wait(driver, lambda d: d.execute_script("return seenStates.at(-1)") == "live", 60, "reconnected after the restart")
    assert "down" in driver.execute_script("return seenStates")  # it did see the server go
    assert list(job_states(driver).values()) == ["succeeded"]
    css(driver, "#tab-gallery").click()
    wait(driver, lambda d: any((i.get_attribute("src") or "").startswith("blob:") for i in all_css(d, "#gallery-grid img")),
         20, "outputs are fetched with the token")
    errors = page_errors(driver)  # only the calls made before the token was set, and the restart's
    assert all("401" in e or "ERR_CONNECTION_REFUSED" in e or "WebSocket" in e for e in errors), errors
