"""What users can do, free of HTTP: plain values in, typed errors out."""
