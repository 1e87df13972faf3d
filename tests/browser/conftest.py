# The browser test needs the built website (`jupyter-book build .`), so the
# default `pytest` run (which .ci/run starts before the build) does not
# collect it. Name the file to run it:
#     .venv/bin/python -m pytest tests/browser/test_site.py
# (.ci/run does this right after the HTML build; see README, "The website in
# a real browser").
collect_ignore = ["test_site.py"]
