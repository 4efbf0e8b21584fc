"""Running thqa elsewhere: Ray for extraction and scoring on a cluster, Ray Serve for a warm scoring service, its client."""
