"""Pictures of features: PCA colourings and similarity maps."""
from .pictures import feature_pca, save_comparison_figure, similarity_map

__all__ = ["feature_pca", "similarity_map", "save_comparison_figure"]
