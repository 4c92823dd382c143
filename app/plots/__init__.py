"""Pure figure builders: data in, plotly Figure out. No st.* calls, no session state."""
