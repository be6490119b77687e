"""Write to the file named by argv[1] and leave it open, held to the end of
the process: only Python's teardown flushes it."""
import sys

sys.left_open = open(sys.argv[1], "w")
sys.left_open.write("written, never closed\n")
