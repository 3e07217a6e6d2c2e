# addimport.awk -v path=IMPORT FILE: add the import path to FILE's import block,
# in the group of unplug's own imports (a new last group if there is none).
# Prints the new file on stdout.
BEGIN { done = 0; inblock = 0 }
!done && /^import "/ {   # a single import: make it a block
  print "import ("; sub(/^import /, "\t"); print; print ""; print "\t\"" path "\""; print ")"; done = 1; next
}
!done && /^import \($/ { inblock = 1; print; next }
inblock && !done && /^\t"github.com\/unplug-dev\/unplug[\/"]/ { print "\t\"" path "\""; print; done = 1; next }
inblock && !done && /^\)$/ { print ""; print "\t\"" path "\""; print; done = 1; inblock = 0; next }
{ print }
END { if (!done) { print "addimport: no import block in " FILENAME > "/dev/stderr"; exit 1 } }
