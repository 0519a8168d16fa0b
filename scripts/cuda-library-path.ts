import { cudaReadiness, libraryPathWith } from '../src/runtime/cuda.ts';

// Prints the LD_LIBRARY_PATH a CUDA run needs: the current one, with the CUDA library folders
// of pip wheels (a PyTorch cu13x install) in front when the loader cannot find the libraries
// otherwise. The bundle's launchers export it before starting Node (the loader reads it once).
const r = cudaReadiness();
process.stdout.write(libraryPathWith(r.missingLibraries.length ? r.suggestedLibraryDirs : []));
