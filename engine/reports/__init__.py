"""Reports: the page, drawings and plots, feedback as a coach says it."""
