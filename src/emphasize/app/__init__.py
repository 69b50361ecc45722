"""The interactive app: weight sliders <-> prompt, plain and the method side by side, per-word attention, edits and
SGOOL/DOODL, in a browser (Gradio).

- `sliders`: prompt <-> sliders (pure, no torch, no gradio);
- `knobs`: each method's knobs, from the method registry's config fields;
- `handlers`: the jobs, without gradio (`ModelSession`: models loaded once, plain sampling cached);
- `ui`: the Gradio page; `server`: `launch` (127.0.0.1, no share link, upload limit, one job at a time).

`emphasize app` starts it. Gradio is an optional dependency (`pip install "emphasize[app]"`); only `ui` and
`server.launch` import it.
"""
