"""`glassbox app`: a live what-if page for a registered model.

Pure parts on top (`inputs`: the form from the model's own description of its inputs;
`explainer`: prediction, SHAP by raw input, the change from a starting row, LIME for one row;
`render`: HTML that draws in the browser, not in matplotlib), the Gradio page and the model's
loading at the bottom (`page`). It reads models and runs through `tasks.tracking`, like
everything else in Glassbox.
"""
