"""cmhash.zoo: datasets, backbones, training recipes and the Hub (needs the [train] extra)."""
