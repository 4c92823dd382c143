"""The Flipscope application: dashboard pages, job plumbing and the command line."""
