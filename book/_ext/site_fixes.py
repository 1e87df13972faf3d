"""Small fixes to the website that the stock Jupyter Book 1.x extensions need.

sphinx-thebe and sphinx-togglebutton add inline scripts from Sphinx events
that run twice in a Jupyter Book build, so every page declared
`const THEBE_JS_URL` twice, a console error on every page. Sphinx already
drops repeated script *files*; this drops repeated inline scripts too.
"""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        key = (
            # The same inline script arrives with filename None and "".
            getattr(script, "filename", str(script)) or "",
            getattr(script, "priority", 500),
            tuple(sorted((k, str(v)) for k, v in attributes.items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
