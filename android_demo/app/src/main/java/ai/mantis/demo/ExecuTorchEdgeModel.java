package ai.mantis.demo;

import ai.mantis.core.EdgeModel;
import ai.mantis.core.Manifest;

import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;
import org.pytorch.executorch.Tensor;

import java.io.File;
import java.util.Arrays;

/** The bundle's {@code edge.pte} on ExecuTorch's Android runtime (XNNPACK), as {@link EdgeModel}. */
final class ExecuTorchEdgeModel implements EdgeModel {
    private final Module module;
    private final Manifest manifest;

    ExecuTorchEdgeModel(File program, Manifest manifest) {
        this.module = Module.load(program.getAbsolutePath());
        this.manifest = manifest;
    }

    @Override
    public Output run(float[] image, long[] shape) {
        EValue[] out = module.forward(EValue.from(Tensor.fromBlob(image, shape)));
        if (out.length != Manifest.EDGE_OUTPUTS.size() || !out[0].isTensor() || !out[1].isTensor()) {
            throw new IllegalStateException(manifest.edge.file + " returned " + out.length + " values, the manifest says "
                    + Manifest.EDGE_OUTPUTS);
        }
        Tensor latent = out[0].toTensor();
        Tensor logits = out[1].toTensor();
        int[] l = manifest.latent;
        long[] want = {1, l[0], l[1], l[2]};
        if (!Arrays.equals(latent.shape(), want) || !Arrays.equals(logits.shape(), new long[] {1, manifest.tasks.size()})) {
            throw new IllegalStateException(manifest.edge.file + " returned shapes " + Arrays.toString(latent.shape()) + " and "
                    + Arrays.toString(logits.shape()) + ", the manifest says " + Arrays.toString(want) + " and [1, "
                    + manifest.tasks.size() + "]");
        }
        return new Output(latent.getDataAsFloatArray(), logits.getDataAsFloatArray());
    }

    void close() {
        module.destroy();
    }
}
