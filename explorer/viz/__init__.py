"""Figure builders: arrays in, plotly / bokeh figures out. No model code and no widget state here."""

from explorer.viz.receptive_field import receptive_field_figure, rf_table_html

__all__ = ["receptive_field_figure", "rf_table_html"]
