"""Pictures of features: PCA colourings and similarity maps."""
from .pictures import (
    FALLBACK_FONT_FAMILIES,
    comparison_figure,
    drawable_text,
    feature_pca,
    figure_layout,
    font_families,
    save_comparison_figure,
    similarity_map,
)

__all__ = ["feature_pca", "similarity_map", "comparison_figure", "save_comparison_figure", "figure_layout",
           "font_families", "drawable_text", "FALLBACK_FONT_FAMILIES"]
