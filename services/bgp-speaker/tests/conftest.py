import sys
from pathlib import Path

# The tests' helpers (helpers.py, birdlab.py) live next to them, outside the package.
sys.path.insert(0, str(Path(__file__).parent))
