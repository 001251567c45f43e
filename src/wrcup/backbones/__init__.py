"""wrcup.backbones"""
