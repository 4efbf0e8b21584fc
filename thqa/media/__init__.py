"""Reading talking-head files: probing, exact decoding of the chosen seconds (pictures and sound), clip sampling."""
