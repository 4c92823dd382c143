"""Explanation methods and black-box models; never imports streamlit."""
