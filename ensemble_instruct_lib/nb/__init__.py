"""What the notebooks call: one step function per notebook cell, figures and widgets.

`steps` holds the per-notebook steps and their typed parameter configs (so notebooks stay thin),
`plots` and `grid_plots` draw figures from DataFrames (model text escaped), and `widgets` are the
interactive inspection layer on top of the static tables and figures.
"""
