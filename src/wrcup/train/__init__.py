"""wrcup.train"""
